"""vfiospec: an executable formal specification of the Linux VFIO / IOMMUFD user DMA API."""

__version__ = "0.1.0"
