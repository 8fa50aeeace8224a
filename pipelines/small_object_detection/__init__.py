"""The ``small_object_detection`` pipeline, with optional sliced (tiled) inference."""
