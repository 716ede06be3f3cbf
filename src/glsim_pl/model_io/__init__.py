"""Model files in and out: one dispatcher for any model file, Lightning modules for the commands, the Hub, ONNX,
the model card. Imports nothing at package import."""
