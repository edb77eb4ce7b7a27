"""conceptlab: teach diffusion models new concepts, generate, edit, and measure."""

import logging

__version__ = "0.1.0"


class _NoTorchvisionNotice(logging.Filter):
    """conceptlab uses the PIL image processors on purpose (no torchvision), so transformers' notice is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_NoTorchvisionNotice())
