"""Annotation-tool formats for the review round trip (pure: no Prefect, no tables).

A run's rows go out to human review as Label Studio tasks (:mod:`.label_studio`) or CVAT for images 1.1
XML (:mod:`.cvat`), and the corrected labels come back, from those files or a COCO dataset (:mod:`.coco`),
as :class:`~.review.ReviewImage` lists that ``pxflow import-gt`` stores as ground truth.
"""
