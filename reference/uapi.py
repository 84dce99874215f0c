"""The uAPI: ioctl numbers, constants and struct layouts of include/uapi/linux/vfio.h
and include/uapi/linux/iommufd.h.

Layouts are computed with C's natural alignment (as `__aligned_u64` gives on every
architecture), so the same tables pack bytes for the real kernel and decode trace
arguments for the reference.
"""

from __future__ import annotations

import struct as _struct
from dataclasses import dataclass, field

# ---------------------------------------------------------------- constants
VFIO_TYPE = ord(";")
VFIO_BASE = 100
IOMMUFD_TYPE = ord(";")
IOMMUFD_CMD_BASE = 0x80

CONSTANTS: dict[str, int] = {
    "VFIO_API_VERSION": 0,
    # extensions / IOMMU types
    "VFIO_TYPE1_IOMMU": 1, "VFIO_SPAPR_TCE_IOMMU": 2, "VFIO_TYPE1v2_IOMMU": 3,
    "VFIO_DMA_CC_IOMMU": 4, "VFIO_EEH": 5, "VFIO_TYPE1_NESTING_IOMMU": 6,
    "__VFIO_RESERVED_TYPE1_NESTING_IOMMU": 6,
    "VFIO_SPAPR_TCE_v2_IOMMU": 7, "VFIO_NOIOMMU_IOMMU": 8, "VFIO_UNMAP_ALL": 9,
    "VFIO_UPDATE_VADDR": 10,
    # group status
    "VFIO_GROUP_FLAGS_VIABLE": 1 << 0, "VFIO_GROUP_FLAGS_CONTAINER_SET": 1 << 1,
    # device info
    "VFIO_DEVICE_FLAGS_RESET": 1 << 0, "VFIO_DEVICE_FLAGS_PCI": 1 << 1,
    "VFIO_DEVICE_FLAGS_CAPS": 1 << 7,
    "VFIO_IRQ_SET_DATA_NONE": 1 << 0, "VFIO_IRQ_SET_DATA_BOOL": 1 << 1, "VFIO_IRQ_SET_DATA_EVENTFD": 1 << 2,
    "VFIO_IRQ_SET_ACTION_MASK": 1 << 3, "VFIO_IRQ_SET_ACTION_UNMASK": 1 << 4,
    "VFIO_IRQ_SET_ACTION_TRIGGER": 1 << 5,
    "VFIO_PCI_INTX_IRQ_INDEX": 0, "VFIO_PCI_MSI_IRQ_INDEX": 1, "VFIO_PCI_MSIX_IRQ_INDEX": 2,
    "VFIO_PCI_ERR_IRQ_INDEX": 3, "VFIO_PCI_REQ_IRQ_INDEX": 4,
    # type1 info
    "VFIO_IOMMU_INFO_PGSIZES": 1 << 0, "VFIO_IOMMU_INFO_CAPS": 1 << 1,
    "VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE": 1, "VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION": 2,
    "VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL": 3,
    # type1 map / unmap
    "VFIO_DMA_MAP_FLAG_READ": 1 << 0, "VFIO_DMA_MAP_FLAG_WRITE": 1 << 1,
    "VFIO_DMA_MAP_FLAG_VADDR": 1 << 2,
    "VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP": 1 << 0, "VFIO_DMA_UNMAP_FLAG_ALL": 1 << 1,
    "VFIO_DMA_UNMAP_FLAG_VADDR": 1 << 2,
    # dirty pages
    "VFIO_IOMMU_DIRTY_PAGES_FLAG_START": 1 << 0, "VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP": 1 << 1,
    "VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP": 1 << 2,
    # sPAPR
    "VFIO_IOMMU_SPAPR_INFO_DDW": 1 << 0,
    "VFIO_EEH_PE_DISABLE": 0, "VFIO_EEH_PE_ENABLE": 1, "VFIO_EEH_PE_UNFREEZE_IO": 2,
    "VFIO_EEH_PE_UNFREEZE_DMA": 3, "VFIO_EEH_PE_GET_STATE": 4,
    "VFIO_EEH_PE_STATE_NORMAL": 0, "VFIO_EEH_PE_STATE_RESET": 1,
    "VFIO_EEH_PE_STATE_STOPPED": 2, "VFIO_EEH_PE_STATE_STOPPED_DMA": 4,
    "VFIO_EEH_PE_STATE_UNAVAIL": 5,
    "VFIO_EEH_PE_RESET_DEACTIVATE": 5, "VFIO_EEH_PE_RESET_HOT": 6,
    "VFIO_EEH_PE_RESET_FUNDAMENTAL": 7, "VFIO_EEH_PE_CONFIGURE": 8,
    "VFIO_EEH_PE_INJECT_ERR": 9,
    "EEH_ERR_TYPE_32": 0, "EEH_ERR_TYPE_64": 1,
    "EEH_ERR_FUNC_LD_MEM_ADDR": 0, "EEH_ERR_FUNC_LD_CFG_ADDR": 4,
    # device cdev
    "VFIO_DEVICE_BIND_FLAG_TOKEN": 1 << 0, "VFIO_DEVICE_ATTACH_PASID": 1 << 0,
    "VFIO_DEVICE_DETACH_PASID": 1 << 0,
    # iommufd
    "IOMMU_IOAS_MAP_FIXED_IOVA": 1 << 0, "IOMMU_IOAS_MAP_WRITEABLE": 1 << 1,
    "IOMMU_IOAS_MAP_READABLE": 1 << 2,
    "IOMMU_OPTION_RLIMIT_MODE": 0, "IOMMU_OPTION_HUGE_PAGES": 1,
    "IOMMU_OPTION_OP_SET": 0, "IOMMU_OPTION_OP_GET": 1,
    "IOMMU_VFIO_IOAS_GET": 0, "IOMMU_VFIO_IOAS_SET": 1, "IOMMU_VFIO_IOAS_CLEAR": 2,
    "IOMMU_HWPT_ALLOC_NEST_PARENT": 1 << 0, "IOMMU_HWPT_ALLOC_DIRTY_TRACKING": 1 << 1,
    "IOMMU_HWPT_FAULT_ID_VALID": 1 << 2,
    "IOMMU_HWPT_DATA_NONE": 0, "IOMMU_HWPT_DATA_VTD_S1": 1,
    "IOMMU_HW_INFO_TYPE_NONE": 0, "IOMMU_HW_INFO_TYPE_INTEL_VTD": 1,
    "IOMMU_HW_CAP_DIRTY_TRACKING": 1 << 0,
    "U32_MAX": (1 << 32) - 1, "U64_MAX": (1 << 64) - 1,
}

# ---------------------------------------------------------------- layouts
_SCALAR = {"u8": ("B", 1), "u16": ("H", 2), "u32": ("I", 4), "s32": ("i", 4), "u64": ("Q", 8)}


@dataclass
class Field:
    name: str
    type: "str | Struct"
    offset: int = 0
    kind: str = "int"      # int | flags | addr | fd | array
    array_of: "Struct | None" = None   # for kind == "array": the element struct

    @property
    def size(self) -> int:
        return self.type.size if isinstance(self.type, Struct) else _SCALAR[self.type][1]

    @property
    def align(self) -> int:
        return self.type.align if isinstance(self.type, Struct) else _SCALAR[self.type][1]

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass
class Struct:
    name: str
    fields: list[Field]
    size: int = 0
    align: int = 1
    # the kernel's minimum size: offsetofend(<field>) that the ioctl checks
    minsz_field: str | None = None
    flag_prefix: str | None = None
    minsz: int = 0
    by_name: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        off = 0
        for f in self.fields:
            off = (off + f.align - 1) // f.align * f.align
            f.offset = off
            off += f.size
            self.align = max(self.align, f.align)
        self.size = (off + self.align - 1) // self.align * self.align
        self.by_name = {f.name: f for f in self.fields}
        self.minsz = self.by_name[self.minsz_field].end if self.minsz_field else self.size

    def field(self, name: str) -> Field:
        return self.by_name[name]

    def has(self, name: str) -> bool:
        return name in self.by_name

    def offsetofend(self, name: str) -> int:
        return self.by_name[name].end

    def pack(self, values: dict) -> bytes:
        buf = bytearray(self.size)
        for f in self.fields:
            v = values.get(f.name, 0)
            if isinstance(f.type, Struct):
                buf[f.offset:f.end] = f.type.pack(v or {})
            else:
                fmt = _SCALAR[f.type][0]
                if f.type == "s32":
                    v = int(v)
                    v = v - (1 << 32) if v >= 1 << 31 else v
                else:
                    v = int(v) & ((1 << (8 * f.size)) - 1)
                _struct.pack_into("<" + fmt if False else "=" + fmt, buf, f.offset, v)
        return bytes(buf)

    def unpack(self, data: bytes) -> dict:
        data = bytes(data[: self.size]).ljust(self.size, b"\0")
        out = {}
        for f in self.fields:
            if isinstance(f.type, Struct):
                out[f.name] = f.type.unpack(data[f.offset:f.end])
            else:
                out[f.name] = _struct.unpack_from("=" + _SCALAR[f.type][0], data, f.offset)[0]
        return out


def S(name, spec, minsz=None, flags=None, kinds=None, arrays=None):
    kinds = kinds or {}
    arrays = arrays or {}
    fields = []
    for n, t in spec:
        k = kinds.get(n, "flags" if n == "flags" else "int")
        if n in arrays:
            k = "array"
        fields.append(Field(n, t, kind=k, array_of=arrays.get(n)))
    return Struct(name, fields, minsz_field=minsz, flag_prefix=flags)


U32, U64, U16, S32 = "u32", "u64", "u16", "s32"

vfio_info_cap_header = S("vfio_info_cap_header", [("id", U16), ("version", U16), ("next", U32)])
vfio_group_status = S("vfio_group_status", [("argsz", U32), ("flags", U32)], "flags", "VFIO_GROUP_FLAGS_")
vfio_device_info = S("vfio_device_info", [("argsz", U32), ("flags", U32), ("num_regions", U32),
                                          ("num_irqs", U32), ("cap_offset", U32), ("pad", U32)],
                     "num_irqs", "VFIO_DEVICE_FLAGS_")
vfio_region_info = S("vfio_region_info", [("argsz", U32), ("flags", U32), ("index", U32), ("cap_offset", U32),
                                          ("size", U64), ("offset", U64)], "offset", "VFIO_REGION_INFO_FLAG_")
vfio_irq_info = S("vfio_irq_info", [("argsz", U32), ("flags", U32), ("index", U32), ("count", U32)],
                  "count", "VFIO_IRQ_INFO_")
vfio_irq_set = S("vfio_irq_set", [("argsz", U32), ("flags", U32), ("index", U32), ("start", U32), ("count", U32)],
                 "count", "VFIO_IRQ_SET_")
vfio_iommu_type1_info = S("vfio_iommu_type1_info", [("argsz", U32), ("flags", U32), ("iova_pgsizes", U64),
                                                    ("cap_offset", U32), ("pad", U32)],
                          "iova_pgsizes", "VFIO_IOMMU_INFO_")
vfio_iommu_type1_dma_map = S("vfio_iommu_type1_dma_map", [("argsz", U32), ("flags", U32), ("vaddr", U64),
                                                          ("iova", U64), ("size", U64)],
                             "size", "VFIO_DMA_MAP_FLAG_", {"vaddr": "addr"})
vfio_bitmap = S("vfio_bitmap", [("pgsize", U64), ("size", U64), ("data", U64)], kinds={"data": "addr"})
vfio_iommu_type1_dma_unmap = S("vfio_iommu_type1_dma_unmap", [("argsz", U32), ("flags", U32), ("iova", U64),
                                                              ("size", U64)], "size", "VFIO_DMA_UNMAP_FLAG_")
vfio_iommu_type1_dirty_bitmap = S("vfio_iommu_type1_dirty_bitmap", [("argsz", U32), ("flags", U32)],
                                  "flags", "VFIO_IOMMU_DIRTY_PAGES_FLAG_")
vfio_iommu_spapr_tce_ddw_info = S("vfio_iommu_spapr_tce_ddw_info", [("pgsizes", U64),
                                                                    ("max_dynamic_windows_supported", U32),
                                                                    ("levels", U32)])
vfio_iommu_spapr_tce_info = S("vfio_iommu_spapr_tce_info", [("argsz", U32), ("flags", U32),
                                                            ("dma32_window_start", U32),
                                                            ("dma32_window_size", U32),
                                                            ("ddw", vfio_iommu_spapr_tce_ddw_info)],
                              "dma32_window_size", "VFIO_IOMMU_SPAPR_INFO_")
vfio_eeh_pe_err = S("vfio_eeh_pe_err", [("type", U32), ("func", U32), ("addr", U64), ("mask", U64)])
vfio_eeh_pe_op = S("vfio_eeh_pe_op", [("argsz", U32), ("flags", U32), ("op", U32), ("err", vfio_eeh_pe_err)],
                   "op")
vfio_iommu_spapr_register_memory = S("vfio_iommu_spapr_register_memory", [("argsz", U32), ("flags", U32),
                                                                          ("vaddr", U64), ("size", U64)],
                                     "size", None, {"vaddr": "addr"})
vfio_iommu_spapr_tce_create = S("vfio_iommu_spapr_tce_create", [("argsz", U32), ("flags", U32),
                                                                ("page_shift", U32), ("__resv1", U32),
                                                                ("window_size", U64), ("levels", U32),
                                                                ("__resv2", U32), ("start_addr", U64)],
                                "start_addr")
vfio_iommu_spapr_tce_remove = S("vfio_iommu_spapr_tce_remove", [("argsz", U32), ("flags", U32),
                                                                ("start_addr", U64)], "start_addr")
vfio_device_bind_iommufd = S("vfio_device_bind_iommufd", [("argsz", U32), ("flags", U32), ("iommufd", S32),
                                                          ("out_devid", U32)], "out_devid",
                             "VFIO_DEVICE_BIND_FLAG_", {"iommufd": "fd"})
vfio_device_attach_iommufd_pt = S("vfio_device_attach_iommufd_pt", [("argsz", U32), ("flags", U32),
                                                                    ("pt_id", U32), ("pasid", U32)],
                                  "pt_id", "VFIO_DEVICE_ATTACH_")
vfio_device_detach_iommufd_pt = S("vfio_device_detach_iommufd_pt", [("argsz", U32), ("flags", U32),
                                                                    ("pasid", U32)],
                                  "flags", "VFIO_DEVICE_DETACH_")

iommu_iova_range = S("iommu_iova_range", [("start", U64), ("last", U64)])
iommu_destroy = S("iommu_destroy", [("size", U32), ("id", U32)], "id")
iommu_ioas_alloc = S("iommu_ioas_alloc", [("size", U32), ("flags", U32), ("out_ioas_id", U32)], "out_ioas_id")
iommu_ioas_iova_ranges = S("iommu_ioas_iova_ranges", [("size", U32), ("ioas_id", U32), ("num_iovas", U32),
                                                      ("__reserved", U32), ("allowed_iovas", U64),
                                                      ("out_iova_alignment", U64)],
                           "out_iova_alignment", None, arrays={"allowed_iovas": iommu_iova_range})
iommu_ioas_allow_iovas = S("iommu_ioas_allow_iovas", [("size", U32), ("ioas_id", U32), ("num_iovas", U32),
                                                      ("__reserved", U32), ("allowed_iovas", U64)],
                           "allowed_iovas", None, arrays={"allowed_iovas": iommu_iova_range})
iommu_ioas_map = S("iommu_ioas_map", [("size", U32), ("flags", U32), ("ioas_id", U32), ("__reserved", U32),
                                      ("user_va", U64), ("length", U64), ("iova", U64)],
                   "iova", "IOMMU_IOAS_MAP_", {"user_va": "addr"})
iommu_ioas_copy = S("iommu_ioas_copy", [("size", U32), ("flags", U32), ("dst_ioas_id", U32),
                                        ("src_ioas_id", U32), ("length", U64), ("dst_iova", U64),
                                        ("src_iova", U64)], "src_iova", "IOMMU_IOAS_MAP_")
iommu_ioas_unmap = S("iommu_ioas_unmap", [("size", U32), ("ioas_id", U32), ("iova", U64), ("length", U64)],
                     "length")
iommu_option = S("iommu_option", [("size", U32), ("option_id", U32), ("op", U16), ("__reserved", U16),
                                  ("object_id", U32), ("val64", U64)], "val64")
iommu_vfio_ioas = S("iommu_vfio_ioas", [("size", U32), ("ioas_id", U32), ("op", U16), ("__reserved", U16)],
                    "__reserved")
iommu_hwpt_alloc = S("iommu_hwpt_alloc", [("size", U32), ("flags", U32), ("dev_id", U32), ("pt_id", U32),
                                          ("out_hwpt_id", U32), ("__reserved", U32), ("data_type", U32),
                                          ("data_len", U32), ("data_uptr", U64), ("fault_id", U32),
                                          ("__reserved2", U32)],
                     "__reserved", "IOMMU_HWPT_ALLOC_", {"data_uptr": "addr"})
iommu_hw_info = S("iommu_hw_info", [("size", U32), ("flags", U32), ("dev_id", U32), ("data_len", U32),
                                    ("data_uptr", U64), ("out_data_type", U32), ("__reserved", U32),
                                    ("out_capabilities", U64)],
                  "__reserved", None, {"data_uptr": "addr"})


@dataclass(frozen=True)
class Ioctl:
    name: str
    nr: int
    arg: str            # none | int | fd | string | struct
    struct: Struct | None = None
    size_field: str = "argsz"    # argsz (vfio) or size (iommufd)

    @property
    def number(self) -> int:
        """_IO(type, nr): every VFIO and IOMMUFD ioctl encodes no size or direction."""
        return (VFIO_TYPE << 8) | self.nr


def _v(name, n, arg="struct", st=None):
    return Ioctl(name, VFIO_BASE + n, arg, st, "argsz")


def _i(name, n, st):
    return Ioctl(name, IOMMUFD_CMD_BASE + n, "struct", st, "size")


IOCTLS: dict[str, Ioctl] = {i.name: i for i in [
    _v("VFIO_GET_API_VERSION", 0, "none"),
    _v("VFIO_CHECK_EXTENSION", 1, "int"),
    _v("VFIO_SET_IOMMU", 2, "int"),
    _v("VFIO_GROUP_GET_STATUS", 3, st=vfio_group_status),
    _v("VFIO_GROUP_SET_CONTAINER", 4, "fd"),
    _v("VFIO_GROUP_UNSET_CONTAINER", 5, "none"),
    _v("VFIO_GROUP_GET_DEVICE_FD", 6, "string"),
    _v("VFIO_DEVICE_GET_INFO", 7, st=vfio_device_info),
    _v("VFIO_DEVICE_GET_REGION_INFO", 8, st=vfio_region_info),
    _v("VFIO_DEVICE_GET_IRQ_INFO", 9, st=vfio_irq_info),
    _v("VFIO_DEVICE_SET_IRQS", 10, st=vfio_irq_set),
    _v("VFIO_DEVICE_RESET", 11, "none"),
    _v("VFIO_IOMMU_GET_INFO", 12, st=vfio_iommu_type1_info),
    _v("VFIO_IOMMU_SPAPR_TCE_GET_INFO", 12, st=vfio_iommu_spapr_tce_info),
    _v("VFIO_IOMMU_MAP_DMA", 13, st=vfio_iommu_type1_dma_map),
    _v("VFIO_IOMMU_UNMAP_DMA", 14, st=vfio_iommu_type1_dma_unmap),
    _v("VFIO_IOMMU_ENABLE", 15, "none"),
    _v("VFIO_IOMMU_DISABLE", 16, "none"),
    _v("VFIO_IOMMU_DIRTY_PAGES", 17, st=vfio_iommu_type1_dirty_bitmap),
    _v("VFIO_IOMMU_SPAPR_REGISTER_MEMORY", 17, st=vfio_iommu_spapr_register_memory),
    _v("VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY", 18, st=vfio_iommu_spapr_register_memory),
    _v("VFIO_IOMMU_SPAPR_TCE_CREATE", 19, st=vfio_iommu_spapr_tce_create),
    _v("VFIO_IOMMU_SPAPR_TCE_REMOVE", 20, st=vfio_iommu_spapr_tce_remove),
    _v("VFIO_EEH_PE_OP", 21, st=vfio_eeh_pe_op),
    _v("VFIO_DEVICE_BIND_IOMMUFD", 18, st=vfio_device_bind_iommufd),
    _v("VFIO_DEVICE_ATTACH_IOMMUFD_PT", 19, st=vfio_device_attach_iommufd_pt),
    _v("VFIO_DEVICE_DETACH_IOMMUFD_PT", 20, st=vfio_device_detach_iommufd_pt),
    _i("IOMMU_DESTROY", 0, iommu_destroy),
    _i("IOMMU_IOAS_ALLOC", 1, iommu_ioas_alloc),
    _i("IOMMU_IOAS_ALLOW_IOVAS", 2, iommu_ioas_allow_iovas),
    _i("IOMMU_IOAS_COPY", 3, iommu_ioas_copy),
    _i("IOMMU_IOAS_IOVA_RANGES", 4, iommu_ioas_iova_ranges),
    _i("IOMMU_IOAS_MAP", 5, iommu_ioas_map),
    _i("IOMMU_IOAS_UNMAP", 6, iommu_ioas_unmap),
    _i("IOMMU_OPTION", 7, iommu_option),
    _i("IOMMU_VFIO_IOAS", 8, iommu_vfio_ioas),
    _i("IOMMU_HWPT_ALLOC", 9, iommu_hwpt_alloc),
    _i("IOMMU_GET_HW_INFO", 10, iommu_hw_info),
]}


def flag_value(st: Struct, flags, where: str = "flags") -> int:
    """A flags field given as an integer or a list of flag names."""
    if isinstance(flags, list):
        v = 0
        for n in flags:
            if n not in CONSTANTS:
                raise ValueError(f"unknown flag {n!r}")
            v |= CONSTANTS[n]
        return v
    return flags


def constant(name: str) -> int:
    if name not in CONSTANTS:
        raise KeyError(name)
    return CONSTANTS[name]
