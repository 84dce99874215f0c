------------------------------ MODULE SpaprTce ------------------------------
(***************************************************************************)
(* The sPAPR TCE IOMMU backend, v1 and v2: DMA windows, TCEs, and (v2)     *)
(* pre-registration of user memory.  Seed: 000 (Documentation/vfio.rst     *)
(* "VFIO bus driver API" / "sPAPR", its TCE example program).  Kernel:     *)
(* drivers/vfio/vfio_iommu_spapr_tce.c (tce_iommu_ioctl, tce_iommu_enable, *)
(* tce_iommu_register_pages, tce_iommu_unregister_pages,                   *)
(* tce_iommu_create_window, tce_iommu_remove_window, tce_iommu_build_v2), *)
(* arch/powerpc/mm/book3s64/iommu_api.c (mm_iommu_do_alloc, mm_iommu_get, *)
(* mm_iommu_put).                                                          *)
(*                                                                         *)
(* One container with one group attached.  A window is named by its slot   *)
(* (tce_iommu_find_table's container->tables[]): slot 0 holds the default  *)
(* 32-bit window (pending from SET_IOMMU, removable in v2), slot 1 a       *)
(* dynamic window; window w covers the IOVA pages WinPages(w).  User       *)
(* memory is pages 0..NUser-1.  The platform is pseries under QEMU         *)
(* (spapr_tce_create_table): TCE_CREATE takes the first free slot; slot 0  *)
(* is the default window restored at its start (the generated traces ask   *)
(* for 4K pages and tce32_size), slot 1 a dynamic window at 1 << 59, and   *)
(* slot 0 while slot 1 holds a window is EPERM.                            *)
(*                                                                         *)
(* UNREGISTER of a region TCEs still point into returns 0 on 6.12 (the     *)
(* container's reference goes first, the EBUSY of the last mm_iommu_put is *)
(* ignored): the region leaves the container's list and stays pinned --    *)
(* observed on a 6.12.107 pseries guest, kernel-semantics.md #61.  We      *)
(* model that: `leaked` collects such regions, and they never come back:   *)
(* they stay in the mm's list, so MAP finds them (mm_iommu_lookup), a new  *)
(* overlapping registration is EINVAL and the identical one shares them.   *)
(***************************************************************************)
EXTENDS Integers, FiniteSets

CONSTANTS NIova,     \* IOVA pages 0..NIova-1; window 0 holds the lower half
          NUser,     \* user pages 0..NUser-1 (vaddr = buf + page * 4096)
          MaxLen     \* largest pre-registered region, in pages

VARIABLES iommu,     \* "none" | "v1" | "v2"
          enabled,   \* container->enabled: v1 ENABLE, v2 first REGISTER_MEMORY
          mmSet,     \* container->mm recorded (REGISTER_MEMORY, TCE_CREATE, ...)
          windows,   \* existing windows (0: default 32-bit, 1: a DDW)
          tces,      \* IOVA page -> -1 or the user page it maps
          regs,      \* pre-registered regions [ua, n] of this container
          leaked,    \* regions unregistered while mapped: still pinned (#61)
          lastCall, lastResult, lastOut

vars == <<iommu, enabled, mmSet, windows, tces, regs, leaked, lastCall, lastResult, lastOut>>

Iovas == 0..(NIova - 1)
User == 0..(NUser - 1)
Half == NIova \div 2
WinPages(w) == IF w = 0 THEN 0..(Half - 1) ELSE Half..(NIova - 1)
Regions == {[ua |-> u, n |-> k] : u \in User, k \in 1..MaxLen}
LastU(r) == r.ua + r.n - 1
Valid(r) == LastU(r) \in User
Covers(r, u) == r.ua <= u /\ u <= LastU(r)
OverlapR(a, b) == a.ua <= LastU(b) /\ b.ua <= LastU(a)
InWindow(p) == \E w \in windows : p \in WinPages(w)
Mapped(r) == \E p \in Iovas : tces[p] # -1 /\ Covers(r, tces[p])
MmRegs == regs \cup leaked      \* the mm's list (mm->context.iommu_group_mem_list)

NoReg == [ua |-> 0, n |-> 0]
Call(op, t, p, u, r, w) == [op |-> op, type |-> t, iova |-> p, ua |-> u, reg |-> r, window |-> w]
Ret(op, t, p, u, r, w, res) ==
    lastCall' = Call(op, t, p, u, r, w) /\ lastResult' = res /\ lastOut' = 0

Init ==
    /\ iommu = "none" /\ enabled = FALSE /\ mmSet = FALSE /\ windows = {}
    /\ tces = [p \in Iovas |-> -1] /\ regs = {} /\ leaked = {}
    /\ lastCall = Call("Init", "", 0, 0, NoReg, 0) /\ lastResult = "ok" /\ lastOut = 0

(* VFIO_SET_IOMMU(VFIO_SPAPR_TCE_IOMMU / _v2_): EINVAL once a driver is set
   (vfio_ioctl_set_iommu); the default window is pending from here on. *)
SetIommu(t) ==
    /\ IF iommu # "none"
       THEN Ret("SetIommu", t, 0, 0, NoReg, 0, "EINVAL") /\ UNCHANGED <<iommu, windows>>
       ELSE Ret("SetIommu", t, 0, 0, NoReg, 0, "ok") /\ iommu' = t /\ windows' = {0}
    /\ UNCHANGED <<enabled, mmSet, tces, regs, leaked>>

Unchanged == UNCHANGED <<iommu, enabled, mmSet, windows, tces, regs, leaked>>

(* VFIO_IOMMU_ENABLE: v1 only (v2: ENOTTY, SPAPR-V2-NO-ENABLE); twice EBUSY
   (SPAPR-V1-ENABLE-TWICE). *)
Enable ==
    /\ iommu # "none"
    /\ CASE iommu = "v2" -> Ret("Enable", "", 0, 0, NoReg, 0, "ENOTTY") /\ Unchanged
         [] enabled -> Ret("Enable", "", 0, 0, NoReg, 0, "EBUSY") /\ Unchanged
         [] OTHER -> /\ Ret("Enable", "", 0, 0, NoReg, 0, "ok")
                     /\ enabled' = TRUE /\ mmSet' = TRUE
                     /\ UNCHANGED <<iommu, windows, tces, regs, leaked>>

(* VFIO_IOMMU_SPAPR_REGISTER_MEMORY (v2; v1 ENOTTY): the identical region again is
   EBUSY (SPAPR-PREREG-TWICE), a region overlapping one of the mm's EINVAL
   (SPAPR-PREREG-OVERLAP), a leaked region again is shared (mm_iommu_get finds it:
   SPAPR-PREREG-UNREGISTER-MAPPED); the first success enables the container
   (SPAPR-V2-ENABLED-BY-REGISTER). *)
Register(r) ==
    /\ iommu # "none" /\ Valid(r)
    /\ CASE iommu = "v1" -> Ret("Register", "", 0, 0, r, 0, "ENOTTY") /\ Unchanged
         [] r \in regs -> Ret("Register", "", 0, 0, r, 0, "EBUSY") /\ Unchanged
         [] r \notin leaked /\ \E x \in MmRegs : OverlapR(x, r) ->
                Ret("Register", "", 0, 0, r, 0, "EINVAL") /\ Unchanged
         [] OTHER -> /\ Ret("Register", "", 0, 0, r, 0, "ok")
                     /\ regs' = regs \cup {r} /\ enabled' = TRUE /\ mmSet' = TRUE
                     /\ UNCHANGED <<iommu, windows, tces, leaked>>

(* VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY (v2): EPERM before the container has an mm
   (SPAPR-PREREG-UNREGISTER-NO-MM); only the exact registered range is found
   (mm_iommu_get), anything else ENOENT (SPAPR-PREREG-EXACT-UNREGISTER); a region
   still mapped by TCEs returns 0 and stays pinned (SPAPR-PREREG-UNREGISTER-MAPPED). *)
Unregister(r) ==
    /\ iommu # "none" /\ Valid(r)
    /\ CASE iommu = "v1" -> Ret("Unregister", "", 0, 0, r, 0, "ENOTTY") /\ Unchanged
         [] ~mmSet -> Ret("Unregister", "", 0, 0, r, 0, "EPERM") /\ Unchanged
         [] r \notin regs -> Ret("Unregister", "", 0, 0, r, 0, "ENOENT") /\ Unchanged
         [] OTHER -> /\ Ret("Unregister", "", 0, 0, r, 0, "ok")
                     /\ regs' = regs \ {r}
                     /\ leaked' = IF Mapped(r) THEN leaked \cup {r} ELSE leaked
                     /\ UNCHANGED <<iommu, enabled, mmSet, windows, tces>>

(* VFIO_IOMMU_MAP_DMA of one IOMMU page: EPERM until enabled (SPAPR-MAP-NOT-ENABLED),
   ENXIO outside every window (SPAPR-MAP-OUTSIDE-WINDOWS), v2 EINVAL unless the user
   page lies in a region of the mm, leaked ones included (tce_iommu_build_v2 ->
   mm_iommu_lookup; SPAPR-V2-MAP-PREREG-ONLY).  Mapping over a live TCE is not
   modelled (the kernel exchanges the entry). *)
Map(p, u) ==
    /\ iommu # "none" /\ tces[p] = -1
    /\ CASE ~enabled -> Ret("Map", "", p, u, NoReg, 0, "EPERM") /\ Unchanged
         [] ~InWindow(p) -> Ret("Map", "", p, u, NoReg, 0, "ENXIO") /\ Unchanged
         [] iommu = "v2" /\ ~\E x \in MmRegs : Covers(x, u) -> Ret("Map", "", p, u, NoReg, 0, "EINVAL") /\ Unchanged
         [] OTHER -> /\ Ret("Map", "", p, u, NoReg, 0, "ok")
                     /\ tces' = [tces EXCEPT ![p] = u]
                     /\ UNCHANGED <<iommu, enabled, mmSet, windows, regs, leaked>>

(* VFIO_IOMMU_UNMAP_DMA of one page: EPERM until enabled, ENXIO outside the windows,
   clearing an empty entry is no error (SPAPR-UNMAP). *)
Unmap(p) ==
    /\ iommu # "none"
    /\ CASE ~enabled -> Ret("Unmap", "", p, 0, NoReg, 0, "EPERM") /\ Unchanged
         [] ~InWindow(p) -> Ret("Unmap", "", p, 0, NoReg, 0, "ENXIO") /\ Unchanged
         [] OTHER -> /\ Ret("Unmap", "", p, 0, NoReg, 0, "ok")
                     /\ tces' = [tces EXCEPT ![p] = -1]
                     /\ UNCHANGED <<iommu, enabled, mmSet, windows, regs, leaked>>

(* VFIO_IOMMU_SPAPR_TCE_CREATE (v2; v1 ENOTTY): records the mm, then the first free
   slot (tce_iommu_create_window), ENOSPC when both windows exist
   (SPAPR-TCE-CREATE-MAX-WINDOWS).  pseries (spapr_tce_create_table): slot 0 while
   slot 1 holds a dynamic window is EPERM (SPAPR-TCE-CREATE-PLATFORM-START).  The call
   has no abstract argument; the slot the window took is its output (lastOut). *)
CreateWindow ==
    /\ iommu # "none"
    /\ CASE iommu = "v1" -> Ret("CreateWindow", "", 0, 0, NoReg, 0, "ENOTTY") /\ Unchanged
         [] windows = {0, 1} -> Ret("CreateWindow", "", 0, 0, NoReg, 0, "ENOSPC") /\ Unchanged
         [] windows = {1} -> Ret("CreateWindow", "", 0, 0, NoReg, 0, "EPERM") /\ Unchanged
         [] OTHER -> LET w == IF 0 \in windows THEN 1 ELSE 0 IN
                     /\ lastCall' = Call("CreateWindow", "", 0, 0, NoReg, 0)
                     /\ lastResult' = "ok" /\ lastOut' = w     \* the slot: start_addr 0 or 1 << 59
                     /\ windows' = windows \cup {w} /\ mmSet' = TRUE
                     /\ UNCHANGED <<iommu, enabled, tces, regs, leaked>>

(* VFIO_IOMMU_SPAPR_TCE_REMOVE (v2): records the mm (tce_iommu_mm_set, so a later
   UNREGISTER is no longer EPERM), then EINVAL unless a window starts there
   (SPAPR-TCE-REMOVE-NO-WINDOW); removing clears its TCEs (SPAPR-TCE-REMOVE). *)
RemoveWindow(w) ==
    /\ iommu # "none"
    /\ CASE iommu = "v1" -> Ret("RemoveWindow", "", 0, 0, NoReg, w, "ENOTTY") /\ Unchanged
         [] w \notin windows -> /\ Ret("RemoveWindow", "", 0, 0, NoReg, w, "EINVAL")
                                /\ mmSet' = TRUE
                                /\ UNCHANGED <<iommu, enabled, windows, tces, regs, leaked>>
         [] OTHER -> /\ Ret("RemoveWindow", "", 0, 0, NoReg, w, "ok")
                     /\ windows' = windows \ {w} /\ mmSet' = TRUE
                     /\ tces' = [p \in Iovas |-> IF p \in WinPages(w) THEN -1 ELSE tces[p]]
                     /\ UNCHANGED <<iommu, enabled, regs, leaked>>

Next ==
    \/ \E t \in {"v1", "v2"} : SetIommu(t)
    \/ Enable \/ CreateWindow
    \/ \E r \in Regions : Register(r) \/ Unregister(r)
    \/ \E p \in Iovas : Unmap(p) \/ \E u \in User : Map(p, u)
    \/ \E w \in {0, 1} : RemoveWindow(w)

Spec == Init /\ [][Next]_vars

-----------------------------------------------------------------------------
TypeOK ==
    /\ iommu \in {"none", "v1", "v2"}
    /\ windows \subseteq {0, 1}
    /\ tces \in [Iovas -> User \cup {-1}]
    /\ regs \subseteq Regions /\ leaked \subseteq Regions

(* Every live TCE lies inside an existing window (tce_iommu_find_table). *)
SPAPR_TCE_IN_WINDOW == \A p \in Iovas : tces[p] # -1 => InWindow(p)

(* The mm's registrations (the container's and the leaked ones) never overlap
   (mm_iommu_do_alloc), and an UNREGISTER that succeeded named a registered range
   exactly: it is gone from the container's list. *)
SPAPR_PREREG_EXACT_UNREGISTER ==
    /\ \A a, b \in MmRegs : a # b => ~OverlapR(a, b)
    /\ (lastCall.op = "Unregister" /\ lastResult = "ok") => lastCall.reg \notin regs

(* v2: the memory behind every live TCE stays pre-registered or pinned: an
   UNREGISTER while mapped returns 0 and leaves the region pinned (leaked), as 6.12 does. *)
SPAPR_PREREG_UNREGISTER_MAPPED_STAYS_PINNED ==
    iommu = "v2" => \A p \in Iovas : tces[p] # -1 => \E x \in regs \cup leaked : Covers(x, tces[p])
=============================================================================
