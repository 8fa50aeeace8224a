"""The ``instance_segmentation`` pipeline: boxes plus full-frame masks (Mask-RT-DETR, MaskRCNN, SOLOv2 ...)."""
