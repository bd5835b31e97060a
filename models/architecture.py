"""The damage CNN: the 2020 architecture and the smaller variant skysift ships.

Both take 128x128x1 float32 tiles already scaled to [0, 1] (the engines scale u8 / 255 in
their preprocessing, as the card says) and end in one sigmoid: p(undamaged), the 2020
convention (>= 0.5 means undamaged). Keras is imported inside the builders so importing this
module stays cheap.
"""

from __future__ import annotations

ARCHITECTURES = ("cnn2020", "cnn2020-bn", "edge-s2", "edge-s3", "edge-p4")
DEFAULT_ARCHITECTURE = "cnn2020-bn"


def build_model(name: str = DEFAULT_ARCHITECTURE, input_px: int = 128):
    """Build an uncompiled Keras model by name (see :data:`ARCHITECTURES`)."""
    if name == "cnn2020":
        return build_cnn2020(input_px)
    if name == "cnn2020-bn":
        return build_cnn2020_bn(input_px)
    if name == "edge-s2":
        return build_edge_s2(input_px)
    if name == "edge-s3":
        return build_edge_s3(input_px)
    if name == "edge-p4":
        return build_edge_p4(input_px)
    raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")


def build_cnn2020(input_px: int = 128):
    """The 2020 degree-project network, layer for layer.

    3x [Conv2D(64, 3x3) + ReLU + MaxPool(3x3) + Dropout(0.5)], Conv2D(64, 3x3) + ReLU,
    Flatten, Dense(64), Dense(1, sigmoid). About 115 k parameters (IR ~230 KB in FP16).
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(input_px, input_px, 1), name="tiles")
    x = inputs
    for i in range(3):
        x = layers.Conv2D(64, 3, activation="relu", name=f"conv{i + 1}")(x)
        x = layers.MaxPooling2D(3, name=f"pool{i + 1}")(x)
        x = layers.Dropout(0.5, name=f"drop{i + 1}")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv4")(x)
    x = layers.Flatten(name="flatten")(x)
    # The 2020 model had no activation on this Dense; kept as published.
    x = layers.Dense(64, name="dense")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_undamaged")(x)
    return keras.Model(inputs, outputs, name="cnn2020")


def build_cnn2020_bn(input_px: int = 128):
    """The 2020 network with BatchNorm after each convolution and global average pooling.

    Same convolution stack (so the same receptive field and cost per tile), but BatchNorm makes
    training on 150 tiles far less sensitive to the seed, and global average pooling instead of
    Flatten makes the head independent of exact spatial position: the damage can be anywhere in
    the tile. ReLU on the hidden Dense (the 2020 model had none, which makes two Dense layers one
    linear map). Lighter dropout: with BatchNorm and augmentation, 0.5 after every block
    under-fits. Same order of size as the 2020 model (~115 k parameters).
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(input_px, input_px, 1), name="tiles")
    x = inputs
    for i in range(3):
        x = layers.Conv2D(64, 3, use_bias=False, name=f"conv{i + 1}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i + 1}")(x)
        x = layers.Activation("relu", name=f"relu{i + 1}")(x)
        x = layers.MaxPooling2D(3, name=f"pool{i + 1}")(x)
        x = layers.Dropout(0.2, name=f"drop{i + 1}")(x)
    x = layers.Conv2D(64, 3, use_bias=False, name="conv4")(x)
    x = layers.BatchNormalization(momentum=0.9, name="bn4")(x)
    x = layers.Activation("relu", name="relu4")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(64, activation="relu", name="dense")(x)
    x = layers.Dropout(0.3, name="drop_head")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_undamaged")(x)
    return keras.Model(inputs, outputs, name="cnn2020_bn")


# Cheaper variants for the 2-core edge CPU. In cnn2020-bn the first convolution writes a
# full-resolution 126x126x64 activation per tile (memory-bound) and conv2 (64->64 on 40x40) is
# ~80 % of its ~73 M MACs; benchmark_app (-hint throughput -b 64, random weights) measured it at
# ~2.7-4.2 k FPS INT8 and ~1.6 k FPS bf16 on this machine. The variants below downsample in the
# first convolution itself and use fewer channels early, with the same BN/ReLU/GAP head.


def _edge_block(x, layers, name: str, filters: int, kernel: int = 3, strides: int = 1,
                pool: int = 0, drop: float = 0.0):
    x = layers.Conv2D(filters, kernel, strides=strides, use_bias=False, name=name)(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    if pool:
        x = layers.MaxPooling2D(pool, name=f"{name}_pool")(x)
    if drop:
        x = layers.Dropout(drop, name=f"{name}_drop")(x)
    return x


def _edge_model(name: str, blocks: list[dict], input_px: int):
    import keras
    from keras import layers

    inputs = keras.Input(shape=(input_px, input_px, 1), name="tiles")
    x = inputs
    for i, kw in enumerate(blocks):
        x = _edge_block(x, layers, f"conv{i + 1}", **kw)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(64, activation="relu", name="dense")(x)
    x = layers.Dropout(0.3, name="drop_head")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_undamaged")(x)
    return keras.Model(inputs, outputs, name=name.replace("-", "_"))


def build_edge_s2(input_px: int = 128):
    """Stride-2 stem, narrow early layers: fast on the edge CPU.

    Conv 3x3/2 (16) 128->63, pool 2 -> 31; conv 3x3 (32) -> 29, pool 2 -> 14; conv 3x3 (64)
    -> 12, pool 3 -> 4; conv 3x3 (64) -> 2; GAP head. ~7.3 M MACs, ~65 k parameters. The
    overlapping stride-2 stem still sees every pixel but never writes a full-resolution
    activation. Random-weight benchmark_app (b64, throughput hint): ~14-21 k FPS INT8,
    ~20-25 k FPS bf16 (cnn2020-bn: ~2.7-4.2 k / ~1.6 k).
    """
    return _edge_model("edge-s2", [
        dict(filters=16, strides=2, pool=2, drop=0.2),
        dict(filters=32, pool=2, drop=0.2),
        dict(filters=64, pool=3, drop=0.2),
        dict(filters=64),
    ], input_px)


def build_edge_s3(input_px: int = 128):
    """cnn2020-bn geometry with conv1 + 3x3 max-pool replaced by one 3x3 stride-3 convolution.

    Conv 3x3/3 (32) 128->42; then as cnn2020-bn but conv2 has 32 channels: conv (32) -> 40,
    pool 3 -> 13; conv (64) -> 11, pool 3 -> 3; conv (64) -> 1; GAP head. ~17.5 M MACs, ~70 k
    parameters. Random-weight benchmark_app (b64, throughput hint): ~20 k FPS INT8, ~11-13 k
    FPS bf16 (cnn2020-bn: ~2.7-4.2 k / ~1.6 k).
    """
    return _edge_model("edge-s3", [
        dict(filters=32, strides=3, drop=0.2),
        dict(filters=32, pool=3, drop=0.2),
        dict(filters=64, pool=3, drop=0.2),
        dict(filters=64),
    ], input_px)


def build_edge_p4(input_px: int = 128):
    """4x4 patchify stem (non-overlapping 4x4 stride-4 convolution), then a small conv stack.

    Conv 4x4/4 (32) 128->32; conv 3x3 (32) -> 30, pool 3 -> 10; conv 3x3 (64) -> 8, pool 2 -> 4;
    conv 3x3 (64) -> 2; GAP head. ~10 M MACs, ~70 k parameters. Fastest measured:
    random-weight benchmark_app (b64, throughput hint) ~24-26 k FPS INT8, ~21-24 k FPS bf16
    (cnn2020-bn: ~2.7-4.2 k / ~1.6 k).
    """
    return _edge_model("edge-p4", [
        dict(filters=32, kernel=4, strides=4),
        dict(filters=32, pool=3, drop=0.2),
        dict(filters=64, pool=2, drop=0.2),
        dict(filters=64),
    ], input_px)
