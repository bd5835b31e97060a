"""Frame sources behind one FrameSource interface: a watched folder and an OpenCV camera."""
