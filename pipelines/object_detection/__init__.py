"""The ``object_detection`` pipeline and the detection model shared by other pipelines."""
