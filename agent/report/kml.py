"""``damage.kml`` / ``damage.kmz``: the report for Google Earth and QGIS, written with simplekml.

One folder per flight holds, per frame with a position: a point placemark (where the report draws
the frame, :attr:`ReportFrame.lonlat`), its ground footprint and its damaged tiles as polygons.
Frames without a position are no placemarks; the document's description counts them. Every
coordinate is lon,lat (KML order) clamped to the ground, rings are closed and counter-clockwise
(KML 2.2 section 10.8), the same rings as ``frames.geojson``.

Styles follow ``p_damaged`` against the model card's threshold: a ramp from green (0) to orange
(just under the threshold) for frames below it, red for frames with a damaged tile and for the
tiles themselves, grey for frames with no score (rejected).

The KMZ adds each frame's thumbnail (damaged tiles outlined, as on the page) as
``files/<frame_id>.jpg`` inside the archive, referenced relatively from the balloon. The plain KML
has no pictures: Google Earth does not show ``data:`` URIs in balloons reliably, and a KML that
points at files elsewhere breaks when it is mailed on its own.
"""

from __future__ import annotations

import base64
import html
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import simplekml

from agent.report.data import ReportData, ReportFrame
from agent.report.images import THUMB_PX, thumbnail

KML_NS = "http://www.opengis.net/kml/2.2"
KML_NAME = "damage.kml"
KMZ_NAME = "damage.kmz"
#: the colour ramp below the threshold (RGB), lowest p_damaged first
RAMP = [(26, 152, 80), (145, 207, 96), (217, 239, 139), (254, 224, 139), (252, 141, 89)]
DAMAGED_RGB = (215, 25, 28)
UNSCORED_RGB = (150, 150, 150)
#: Google Earth's own white dot, which it tints with the icon colour (it ships with the program)
ICON = "http://maps.google.com/mapfiles/kml/shapes/shaded_dot.png"
#: the frame fields a balloon and ExtendedData show, in order
FRAME_FIELDS = ["frame_id", "flight_id", "status", "reason", "label", "p_damaged", "damaged_tiles",
                "tiles", "captured_at", "alt", "geo_source", "pose_source"]


def _kml_colour(rgb: tuple[int, int, int], alpha: int) -> str:
    return simplekml.Color.rgb(*rgb, a=alpha)


def style_key(p: float | None, threshold: float) -> str:
    """The style id of a frame of this ``p_damaged``: ``damaged``, ``unscored`` or ``ramp<i>``."""
    if p is None:
        return "unscored"
    if p >= threshold:
        return "damaged"
    return f"ramp{min(len(RAMP) - 1, int(len(RAMP) * max(0.0, p) / threshold))}"


def _rgb(key: str) -> tuple[int, int, int]:
    if key == "damaged":
        return DAMAGED_RGB
    if key == "unscored":
        return UNSCORED_RGB
    return RAMP[int(key.removeprefix("ramp"))]


class _Styles:
    """Shared styles, made once each and kept in the document, so that every flight's folder
    points at the same ones (simplekml would write each inside the first folder using it)."""

    def __init__(self, document: simplekml.Document) -> None:
        self._document = document
        self._made: dict[str, simplekml.Style] = {}

    def _new(self, sid: str) -> simplekml.Style:
        style = simplekml.Style()
        style._id = sid  # readable ids in styleUrl ("#frame-damaged"), not simplekml's counters
        self._made[sid] = style
        self._document.styles.append(style)
        return style

    def frame(self, key: str) -> simplekml.Style:
        sid = f"frame-{key}"
        if sid not in self._made:
            style = self._new(sid)
            style.iconstyle.color = _kml_colour(_rgb(key), 255)
            style.iconstyle.scale = 0.8
            style.iconstyle.icon.href = ICON
            # thousands of labels would hide the map; the name stays in the list and balloon
            style.labelstyle.scale = 0
        return self._made[sid]

    def area(self, kind: str, key: str) -> simplekml.Style:
        """A footprint outline in the frame's colour, or a damaged tile filled red."""
        sid = f"{kind}-{key}"
        if sid not in self._made:
            style = self._new(sid)
            rgb = _rgb(key)
            style.linestyle.color = _kml_colour(rgb, 255)
            style.linestyle.width = 2 if kind == "footprint" else 1
            style.polystyle.color = _kml_colour(rgb, 40 if kind == "footprint" else 140)
        return self._made[sid]


def frame_name(f: ReportFrame) -> str:
    """A frame's placemark name: its image file's name, else its id."""
    path = f.row.get("image_path")
    return Path(path).name if path else f.row["frame_id"]


def _balloon(f: ReportFrame, image: str | None) -> str:
    rows = "".join(
        f"<tr><th align='left'>{k}</th><td>{html.escape(str(f.row[k]))}</td></tr>"
        for k in FRAME_FIELDS if f.row.get(k) is not None
    )
    if f.ground_problem:
        rows += f"<tr><th align='left'>ground</th><td>{html.escape(f.ground_problem)}</td></tr>"
    img = f"<img src='{image}' alt='thumbnail'/><br/>" if image else ""
    # CDATA: simplekml leaves it as is, and the balloon's HTML needs no second escaping
    return f"<![CDATA[{img}<table>{rows}</table>]]>"


def _extended(feature: Any, values: dict[str, Any]) -> None:
    for k, v in values.items():
        if v is not None:
            # simplekml escapes names and descriptions but writes a Data value as it is
            feature.extendeddata.newdata(k, html.escape(str(v), quote=False))


def _polygon(folder: Any, name: str, ring: list[tuple[float, float]], style: simplekml.Style) -> Any:
    pol = folder.newpolygon(name=name, outerboundaryis=ring)
    pol.altitudemode = simplekml.AltitudeMode.clamptoground
    pol.tessellate = 1  # draped on the terrain, edges too
    pol.style = style
    return pol


def _add_frame(folder: Any, data: ReportData, f: ReportFrame, styles: _Styles, image: str | None) -> None:
    key = style_key(f.row.get("p_damaged"), data.threshold)
    name = frame_name(f)
    pnt = folder.newpoint(name=name, coords=[f.lonlat])
    pnt.altitudemode = simplekml.AltitudeMode.clamptoground
    pnt.description = _balloon(f, image)
    pnt.style = styles.frame(key)
    _extended(pnt, {"kind": "frame", **{k: f.row.get(k) for k in FRAME_FIELDS}})
    fp = f.footprint
    if fp is None:
        return
    lonlat = data.projection.to_lonlat
    outline = _polygon(folder, f"{name} footprint", [lonlat(x, y) for x, y in fp.outline],
                       styles.area("footprint", key))
    _extended(outline, {"kind": "footprint", "frame_id": f.row["frame_id"], "footprint_source": fp.source})
    for r, c, p, ring in fp.damaged_tiles:
        tile = _polygon(folder, f"{name} tile {r},{c}", [lonlat(x, y) for x, y in ring],
                        styles.area("tile", "damaged"))
        _extended(tile, {"kind": "damaged_tile", "frame_id": f.row["frame_id"], "row": r, "col": c,
                         "p_damaged": round(p, 4)})


def _summary(data: ReportData) -> str:
    placed, unplaced = len(data.located), len(data.unlocated)
    return (
        f"{len(data.frames)} frames of {len(data.flights)} flight(s): {placed} placed, "
        f"{unplaced} without position (not shown). Damaged from p_damaged {data.threshold:g} on "
        f"(the model card's threshold). Made by skysift at {data.generated_at}."
    )


def build_kml(data: ReportData, images: dict[str, str] | None = None, title: str | None = None) -> simplekml.Kml:
    """The report as a simplekml document; ``images`` maps frame ids to a balloon picture's href."""
    doc = simplekml.Kml(name=title or "skysift damage map")
    doc.document.description = _summary(data)
    styles = _Styles(doc.document)
    counts = {c["flight_id"]: c for c in data.flight_counts()}
    for fl in data.flights:
        c = counts[fl["flight_id"]]
        folder = doc.newfolder(name=c["name"])
        folder.description = (
            f"flight {fl['flight_id']}: {c['frames']} frames, {c['located']} placed, "
            f"{c['unlocated']} without position, {c['damaged']} damaged"
        )
        for f in data.frames:
            if f.row["flight_id"] == fl["flight_id"] and f.located:
                _add_frame(folder, data, f, styles, (images or {}).get(f.row["frame_id"]))
    return doc


#: the KML 2.2 schema's order of the child elements this module writes; others keep their place
SCHEMA_ORDER = {f"{{{KML_NS}}}{tag}": rank for rank, tag in enumerate([
    "name", "visibility", "open", "Snippet", "description", "styleUrl", "Style", "ExtendedData",
    "extrude", "tessellate", "altitudeMode", "coordinates", "outerBoundaryIs",
])}


def to_kml(doc: simplekml.Kml) -> str:
    """The document as KML 2.2 that validates against the OGC schema.

    simplekml writes a container's styles before its name, a point's altitudeMode after its
    coordinates, and numeric ids that are no xs:ID (an id may not start with a digit); Google
    Earth forgives all three, strict readers need not. This puts the elements in the schema's
    order and drops the numeric ids, which nothing refers to (styles have names of their own).
    """
    ET.register_namespace("", KML_NS)
    root = ET.fromstring(doc.kml(format=False))
    for el in root.iter():
        if el.get("id", "x")[:1].isdigit():
            del el.attrib["id"]
        kids = sorted(el, key=lambda c: SCHEMA_ORDER.get(c.tag, len(SCHEMA_ORDER)))  # stable
        el[:] = kids
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def write_kml(data: ReportData, path: Path, title: str | None = None) -> None:
    """Write the plain KML (no pictures) to ``path``."""
    path.write_text(to_kml(build_kml(data, title=title)), encoding="utf-8")


def _thumbnail_jpeg(f: ReportFrame, storage_dir: Path | None, threshold: float) -> bytes | None:
    # the page's own thumbnail (same outlines), back from its data: URI to the JPEG bytes
    uri = thumbnail(f.row, storage_dir, THUMB_PX, threshold=threshold)
    return base64.b64decode(uri.split(",", 1)[1]) if uri else None


def write_kmz(data: ReportData, path: Path, storage_dir: Path | None = None, title: str | None = None) -> None:
    """Write the KMZ to ``path``: ``doc.kml`` first (Google Earth opens the archive's first
    .kml), then the thumbnails as ``files/<frame_id>.jpg``; a frame whose image is gone has none."""
    thumbs = {}
    for f in data.located:
        jpeg = _thumbnail_jpeg(f, storage_dir, data.threshold)
        if jpeg is not None:
            thumbs[f"files/{f.row['frame_id']}.jpg"] = jpeg
    images = {name.removeprefix("files/").removesuffix(".jpg"): name for name in thumbs}
    doc = build_kml(data, images, title)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as kmz:
        kmz.writestr("doc.kml", to_kml(doc))
        for name, jpeg in thumbs.items():
            kmz.writestr(name, jpeg, compress_type=zipfile.ZIP_STORED)  # JPEGs do not deflate
