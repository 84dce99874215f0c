"""The powerpc side of the sPAPR TCE IOMMU as VFIO sees it: per-mm pre-registered
memory (arch/powerpc/mm/book3s64/iommu_api.c, `iommu_api`) and the platform's
TCE tables and DMA windows (arch/powerpc/kernel/iommu.c with
arch/powerpc/platforms/pseries/iommu.c, `iommu`)."""
