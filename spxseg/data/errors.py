"""Dataset errors: each names the offending path or value and says what was expected."""

from __future__ import annotations


class DatasetError(ValueError):
    """Base class of the data errors that are about content rather than missing files."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset root or split directory is missing (the message names the expected layout)."""


class MissingLabelError(FileNotFoundError):
    """An image has no label file next to it in the expected layout (names both paths)."""


class ImageReadError(DatasetError):
    """An image or label file that cannot be decoded: unreadable, truncated or not an image."""


class LabelValueError(DatasetError):
    """A label map holds a value that is neither a known class id nor the ignore value 255."""


class CocoCategoryError(DatasetError):
    """A COCO annotation uses a category that the category -> class mapping does not cover."""


class MissingImageError(FileNotFoundError):
    """An image listed in an annotation file does not exist on disk."""
