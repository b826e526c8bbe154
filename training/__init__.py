"""Training the wine-quality model: fit, compare, export to ONNX, write the model card.

Not part of any image: the wine image serves the model that training wrote (``app.wine``), and nothing in
``app`` imports this package. ``python -m training --output DIR`` trains from the command line.
"""
