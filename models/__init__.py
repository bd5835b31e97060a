"""Inference engines behind one Classifier interface, the shipped model and its card.

Heavy libraries (openvino, tensorflow) are imported only inside the engine module that uses
them, and only when that engine is chosen.
"""
