"""The ``open_vocabulary_segmentation`` pipeline: SAM masks from box or point prompts, or from a detector's boxes."""
