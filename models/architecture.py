"""The damage CNN: the 2020 architecture and the smaller variant skysift ships.

Both take 128x128x1 float32 tiles already scaled to [0, 1] (the engines scale u8 / 255 in
their preprocessing, as the card says) and end in one sigmoid: p(undamaged), the 2020
convention (undamaged from the card's threshold on; 0.5 before training tunes it). Keras is
imported inside the builders so importing this module stays cheap.
"""

from __future__ import annotations

ARCHITECTURES = ("cnn2020", "cnn2020-bn")
DEFAULT_ARCHITECTURE = "cnn2020-bn"


def build_model(name: str = DEFAULT_ARCHITECTURE, input_px: int = 128):
    """Build an uncompiled Keras model by name (see :data:`ARCHITECTURES`)."""
    if name == "cnn2020":
        return build_cnn2020(input_px)
    if name == "cnn2020-bn":
        return build_cnn2020_bn(input_px)
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
