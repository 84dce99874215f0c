"""VFIO_EEH_PE_OP: EEH error recovery of a partitionable endpoint (PE), the state
machine of the seed's sPAPR example.  drivers/vfio/vfio_spapr_eeh.c
(vfio_spapr_iommu_eeh_ioctl; since 6.6 vfio_spapr_ioctl_eeh_pe_op in
drivers/vfio/vfio_iommu_spapr_tce.c), arch/powerpc/kernel/eeh.c
(eeh_pe_set_option, eeh_pci_enable, eeh_pe_get_state, eeh_pe_reset,
eeh_pe_configure, eeh_pe_inject_err) and the pseries eeh_ops
(arch/powerpc/platforms/pseries/eeh_pseries.c pseries_eeh_err_inject).

State (what the invariants read): ``kernel.objects["eeh_pe"]`` maps an IOMMU
group number to its ``EehPe``, which exists only on a platform with
``iommu.eeh`` (an EEH-capable PHB; emulated devices have no PE and every op is
ENODEV).  ``EehPe``: ``mmio_enabled`` / ``dma_enabled`` (false while frozen),
``reset_active`` (a hot or fundamental reset asserted), ``cfg_blocked``
(EEH_PE_CFG_BLOCKED), ``owned`` (EEH enabled by the user: eeh_pe_change_owner).

GET_STATE (eeh_pe_get_state): reset asserted -> EEH_PE_STATE_RESET (1); MMIO
and DMA enabled -> NORMAL (0); both stopped -> STOPPED_IO_DMA (2); DMA stopped,
MMIO enabled -> STOPPED_DMA (4); MMIO stopped, DMA enabled -> UNAVAIL (5).

Abstraction: an injected MMIO error (pseries_eeh_err_inject ->
eeh_pe_inject_mmio_error -> eeh_break_device) freezes the PE at once, as the
MMIO access the kernel makes with memory decoding off does on hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

from vfiospec.reference import uapi
from vfiospec.reference.errors import Errno

C = uapi.CONSTANTS
EEH_ERR_FUNC_MIN, EEH_ERR_FUNC_MAX = 0, 19
# pseries_eeh_err_inject: only MMIO load/store address/data errors
PSERIES_INJECT_FUNCS = (0, 1, 6, 7)     # LD_MEM_ADDR, LD_MEM_DATA, ST_MEM_ADDR, ST_MEM_DATA


@dataclass
class EehPe:
    mmio_enabled: bool = True
    dma_enabled: bool = True
    reset_active: bool = False
    cfg_blocked: bool = False
    owned: bool = False

    def state(self) -> int:
        if self.reset_active:
            return C["VFIO_EEH_PE_STATE_RESET"]
        if self.dma_enabled and self.mmio_enabled:
            return C["VFIO_EEH_PE_STATE_NORMAL"]
        if not self.dma_enabled and not self.mmio_enabled:
            return C["VFIO_EEH_PE_STATE_STOPPED"]
        if not self.dma_enabled:
            return C["VFIO_EEH_PE_STATE_STOPPED_DMA"]
        return C["VFIO_EEH_PE_STATE_UNAVAIL"]


def eeh_enabled(kernel) -> bool:
    """eeh_enabled(): EEH is on when the platform has an EEH-capable PHB."""
    return bool(kernel.platform.iommu.eeh)


def eeh_iommu_group_to_pe(kernel, group) -> EehPe | None:
    """eeh_iommu_group_to_pe: the group's PE, None without EEH."""
    if not eeh_enabled(kernel):
        return None
    pes = kernel.objects.setdefault("eeh_pe", {})
    return pes.setdefault(group.number, EehPe())


def check_extension(kernel, arg: int) -> int:
    """VFIO_CHECK_EXTENSION(VFIO_EEH): eeh_enabled()."""
    if arg == C["VFIO_EEH"]:
        kernel.cover("EEH-CHECK-EXTENSION")
        return int(eeh_enabled(kernel))
    return 0


def pe_op(kernel, group, arg: dict) -> int:
    """vfio_spapr_ioctl_eeh_pe_op for one group."""
    pe = eeh_iommu_group_to_pe(kernel, group)
    if pe is None:
        raise Errno("ENODEV", "EEH-NO-PE")
    if arg.get("argsz", 0) < uapi.vfio_eeh_pe_op.minsz or arg.get("flags", 0):
        raise Errno("EINVAL", "EEH-PE-OP-ARGSZ-FLAGS")
    op = arg.get("op", 0)
    if op == C["VFIO_EEH_PE_DISABLE"]:
        kernel.cover("EEH-PE-ENABLE-DISABLE")
        return 0                       # eeh_pe_set_option(EEH_OPT_DISABLE): nothing to do
    if op == C["VFIO_EEH_PE_ENABLE"]:
        pe.owned = True                # eeh_pe_change_owner
        kernel.cover("EEH-PE-ENABLE-DISABLE")
        return 0
    if op == C["VFIO_EEH_PE_UNFREEZE_IO"]:
        pe.mmio_enabled = True         # eeh_pci_enable(EEH_OPT_THAW_MMIO)
        kernel.cover("EEH-PE-UNFREEZE")
        return 0
    if op == C["VFIO_EEH_PE_UNFREEZE_DMA"]:
        pe.dma_enabled = True          # eeh_pci_enable(EEH_OPT_THAW_DMA)
        kernel.cover("EEH-PE-UNFREEZE")
        return 0
    if op == C["VFIO_EEH_PE_GET_STATE"]:
        kernel.cover("EEH-PE-GET-STATE")
        return pe.state()
    if op in (C["VFIO_EEH_PE_RESET_HOT"], C["VFIO_EEH_PE_RESET_FUNDAMENTAL"]):
        # eeh_pe_reset: freeze the PE, block config space, assert the reset
        pe.mmio_enabled = pe.dma_enabled = False
        pe.cfg_blocked = True
        pe.reset_active = True
        kernel.cover("EEH-PE-RESET")
        return 0
    if op == C["VFIO_EEH_PE_RESET_DEACTIVATE"]:
        # eeh_pe_reset(EEH_RESET_DEACTIVATE, include_passed): deassert, unblock,
        # eeh_pe_reenable_devices -> eeh_unfreeze_pe
        pe.reset_active = False
        pe.cfg_blocked = False
        pe.mmio_enabled = pe.dma_enabled = True
        kernel.cover("EEH-PE-RESET")
        return 0
    if op == C["VFIO_EEH_PE_CONFIGURE"]:
        kernel.cover("EEH-PE-CONFIGURE")
        return 0                       # eeh_pe_configure: nothing left to do
    if op == C["VFIO_EEH_PE_INJECT_ERR"]:
        if arg.get("argsz", 0) < uapi.vfio_eeh_pe_op.offsetofend("err"):
            raise Errno("EINVAL", "EEH-INJECT-ARGSZ")
        err = arg.get("err") or {}
        etype, func = err.get("type", 0), err.get("func", 0)
        if func < EEH_ERR_FUNC_MIN or func > EEH_ERR_FUNC_MAX:
            raise Errno("EINVAL", "EEH-INJECT-FUNC")
        if etype not in (C["EEH_ERR_TYPE_32"], C["EEH_ERR_TYPE_64"]):
            raise Errno("EINVAL", "EEH-INJECT-TYPE")
        if func not in PSERIES_INJECT_FUNCS:
            raise Errno("ERANGE", "EEH-INJECT-PSERIES-MMIO-ONLY")
        pe.mmio_enabled = pe.dma_enabled = False
        kernel.cover("EEH-INJECT-FREEZES")
        return 0
    raise Errno("EINVAL", "EEH-PE-OP-UNKNOWN")


def container_pe_op(kernel, groups, arg: dict) -> int:
    """tce_iommu_ioctl VFIO_EEH_PE_OP: every attached group in list order; the
    first non-zero result (an error or a state) is returned."""
    ret = 0
    for g in groups:
        ret = pe_op(kernel, g, arg)
        if ret:
            return ret
    return ret
