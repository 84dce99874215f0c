------------------------------ MODULE Iommufd ------------------------------
(***************************************************************************)
(* IOMMUFD: IOAS, areas, iopt_pages and pinning, device binding through    *)
(* the VFIO device cdev, attach / replace / detach with automatic HWPTs,   *)
(* and the cdev / group-node exclusivity.                                  *)
(* Seeds: 004 (Documentation/userspace-api/iommufd.rst: "IOMMUFD objects", *)
(* "an iopt_pages ... a page is pinned only once") and 003                 *)
(* (Documentation/driver-api/vfio.rst "VFIO Device cdev").                 *)
(* Kernel: drivers/iommu/iommufd/{ioas.c, io_pagetable.c, pages.c,         *)
(* device.c, main.c}; drivers/vfio/{device_cdev.c, group.c, iommufd.c}.   *)
(*                                                                         *)
(* One iommufd context; each device is alone in its group and its cdev fd  *)
(* is open.  IOAS ids are slots 1..NIoas (the lowest free slot is taken);  *)
(* iopt_pages objects are 1..NPObj.  Each action records lastCall,         *)
(* lastResult (errno name or "ok") and lastOut.                            *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS Devices,  \* e.g. {"dev0"}; device d is alone in group "g" of the same number
          NIoas,    \* IOAS slots
          NPages,   \* IOVA pages 0..NPages-1 (iova = page * 4096)
          MaxLen    \* largest area, in pages

VARIABLES groupOpen,  \* device -> its group node /dev/vfio/$GROUP is open
          bound,      \* device -> number of successful VFIO_DEVICE_BIND_IOMMUFD
          attached,   \* device -> 0 or the IOAS slot whose automatic HWPT it is attached to
          ioas,       \* allocated IOAS slots
          areas,      \* slot -> set of [iova, size, pages]
          pins,       \* iopt_pages id -> times its pages are pinned
          lastCall, lastResult, lastOut

vars == <<groupOpen, bound, attached, ioas, areas, pins, lastCall, lastResult, lastOut>>

Slots == 1..NIoas
Pages == 0..(NPages - 1)
NPObj == NIoas * NPages
PObj == 1..NPObj
Ranges == {[iova |-> i, size |-> s] : i \in Pages, s \in 1..MaxLen}
UnmapRanges == {[iova |-> i, size |-> s] : i \in Pages, s \in 1..NPages}   \* an unmap may span areas
Last(r) == r.iova + r.size - 1
InSpace(r) == Last(r) \in Pages
Overlap(a, b) == a.iova <= Last(b) /\ b.iova <= Last(a)
RangeOf(a) == [iova |-> a.iova, size |-> a.size]
Min(S) == CHOOSE x \in S : \A y \in S : x <= y

RECURSIVE SumSizes(_)
SumSizes(S) == IF S = {} THEN 0 ELSE LET d == CHOOSE d \in S : TRUE IN d.size + SumSizes(S \ {d})

NoRange == [iova |-> 0, size |-> 0]
Call(op, d, s, r, t, i) ==
    [op |-> op, dev |-> d, ioas |-> s, iova |-> r.iova, size |-> r.size, dst |-> t, dst_iova |-> i]
Ret(op, d, s, r, t, i, res, out) ==
    /\ lastCall' = Call(op, d, s, r, t, i)
    /\ lastResult' = res
    /\ lastOut' = out

(* IOASes with a domain: the automatic HWPT of a slot exists while a device is attached. *)
DomainSlots(att) == {att[d] : d \in Devices} \ {0}
Referenced(ar, p) == \E s \in Slots : \E a \in ar[s] : a.pages = p
NeedPin(ar, att, p) == \E s \in DomainSlots(att) : \E a \in ar[s] : a.pages = p

(* pfn_reader: pages already pinned for one domain are copied into another domain,
   never pinned again (pages.c; Documentation iommufd.rst "pinned only once"). *)
Repin ==
    pins' = [p \in PObj |-> IF NeedPin(areas', attached', p)
                            THEN (IF pins[p] = 0 THEN 1 ELSE pins[p])
                            ELSE 0]

Init ==
    /\ groupOpen = [d \in Devices |-> FALSE]
    /\ bound = [d \in Devices |-> 0]
    /\ attached = [d \in Devices |-> 0]
    /\ ioas = {}
    /\ areas = [s \in Slots |-> {}]
    /\ pins = [p \in PObj |-> 0]
    /\ lastCall = Call("Init", "", 0, NoRange, 0, 0)
    /\ lastResult = "ok"
    /\ lastOut = 0

(* open("/dev/vfio/$GROUP"): EBUSY when already open (GROUP-SINGLE-OPEN) or when a
   device of the group is bound through its cdev (vfio_group_fops_open,
   cdev_device_open_cnt: CDEV-GROUP-EXCLUSIVE). *)
OpenGroup(d) ==
    /\ IF groupOpen[d] \/ bound[d] > 0
       THEN Ret("OpenGroup", d, 0, NoRange, 0, 0, "EBUSY", 0) /\ UNCHANGED groupOpen
       ELSE Ret("OpenGroup", d, 0, NoRange, 0, 0, "ok", 0) /\ groupOpen' = [groupOpen EXCEPT ![d] = TRUE]
    /\ UNCHANGED <<bound, attached, ioas, areas>>

CloseGroup(d) ==
    /\ groupOpen[d]
    /\ Ret("CloseGroup", d, 0, NoRange, 0, 0, "ok", 0)
    /\ groupOpen' = [groupOpen EXCEPT ![d] = FALSE]
    /\ UNCHANGED <<bound, attached, ioas, areas>>

(* VFIO_DEVICE_BIND_IOMMUFD on the cdev fd (vfio_df_ioctl_bind_iommufd):
   vfio_device_block_group first (EBUSY while the group node is open), then a fd
   already bound is EINVAL (CDEV-BIND-TWICE). *)
Bind(d) ==
    /\ CASE groupOpen[d] -> Ret("Bind", d, 0, NoRange, 0, 0, "EBUSY", 0) /\ UNCHANGED bound
         [] bound[d] > 0 -> Ret("Bind", d, 0, NoRange, 0, 0, "EINVAL", 0) /\ UNCHANGED bound
         [] OTHER -> Ret("Bind", d, 0, NoRange, 0, 0, "ok", 0) /\ bound' = [bound EXCEPT ![d] = @ + 1]
    /\ UNCHANGED <<groupOpen, attached, ioas, areas>>

(* VFIO_DEVICE_ATTACH_IOMMUFD_PT with an IOAS id: EINVAL before bind
   (CDEV-NO-ACCESS-BEFORE-BIND), ENOENT for an id that is no IOAS; otherwise the
   automatic HWPT of the IOAS is reused or made (IOMMUFD-ATTACH-AUTO-HWPT) and a
   second attach replaces the first (6.6+, IOMMUFD-REPLACE). *)
Attach(d, s) ==
    /\ CASE bound[d] = 0 -> Ret("Attach", d, s, NoRange, 0, 0, "EINVAL", 0) /\ UNCHANGED attached
         [] s \notin ioas -> Ret("Attach", d, s, NoRange, 0, 0, "ENOENT", 0) /\ UNCHANGED attached
         [] OTHER -> /\ Ret("Attach", d, s, NoRange, 0, 0, "ok", 0)
                     /\ attached' = [attached EXCEPT ![d] = s]
    /\ UNCHANGED <<groupOpen, bound, ioas, areas>>

(* VFIO_DEVICE_DETACH_IOMMUFD_PT: always 0 once bound (CDEV-DETACH); the automatic
   HWPT goes with its last device (HWPT-AUTO-DESTROYED). *)
Detach(d) ==
    /\ IF bound[d] = 0
       THEN Ret("Detach", d, 0, NoRange, 0, 0, "EINVAL", 0) /\ UNCHANGED attached
       ELSE /\ Ret("Detach", d, 0, NoRange, 0, 0, "ok", 0)
            /\ attached' = [attached EXCEPT ![d] = 0]
    /\ UNCHANGED <<groupOpen, bound, ioas, areas>>

(* IOMMU_DESTROY of a bound device's id: EBUSY, VFIO holds it until close (#97). *)
DestroyDevice(d) ==
    /\ bound[d] > 0
    /\ Ret("DestroyDevice", d, 0, NoRange, 0, 0, "EBUSY", 0)
    /\ UNCHANGED <<groupOpen, bound, attached, ioas, areas>>

(* IOMMU_IOAS_ALLOC (IOAS-ALLOC). *)
IoasAlloc ==
    /\ ioas # Slots
    /\ LET s == Min(Slots \ ioas) IN
         /\ Ret("IoasAlloc", "", s, NoRange, 0, 0, "ok", s)
         /\ ioas' = ioas \cup {s}
         /\ areas' = [areas EXCEPT ![s] = {}]
    /\ UNCHANGED <<groupOpen, bound, attached>>

(* IOMMU_DESTROY of an IOAS: ENOENT if none, EBUSY while an HWPT uses it; its areas
   go with it (main.c iommufd_destroy, ioas.c iommufd_ioas_destroy). *)
IoasDestroy(s) ==
    /\ CASE s \notin ioas -> Ret("IoasDestroy", "", s, NoRange, 0, 0, "ENOENT", 0) /\ UNCHANGED <<ioas, areas>>
         [] s \in DomainSlots(attached) -> Ret("IoasDestroy", "", s, NoRange, 0, 0, "EBUSY", 0) /\ UNCHANGED <<ioas, areas>>
         [] OTHER -> /\ Ret("IoasDestroy", "", s, NoRange, 0, 0, "ok", 0)
                     /\ ioas' = ioas \ {s}
                     /\ areas' = [areas EXCEPT ![s] = {}]
    /\ UNCHANGED <<groupOpen, bound, attached>>

FreePObj(ar) == {p \in PObj : ~Referenced(ar, p)}

(* IOMMU_IOAS_MAP with FIXED_IOVA: ENOENT for a missing IOAS, EEXIST on any overlap
   (IOAS-MAP-OVERLAP); a new iopt_pages per call (io_pagetable.c iopt_map_user_pages),
   pinned now only if the IOAS has a domain (IOAS-MAP-LAZY). *)
IoasMap(s, r) ==
    /\ InSpace(r)
    /\ CASE s \notin ioas -> Ret("IoasMap", "", s, r, 0, 0, "ENOENT", 0) /\ UNCHANGED areas
         [] \E a \in areas[s] : Overlap(a, r) -> Ret("IoasMap", "", s, r, 0, 0, "EEXIST", 0) /\ UNCHANGED areas
         [] OTHER -> /\ FreePObj(areas) # {}
                     /\ Ret("IoasMap", "", s, r, 0, 0, "ok", 0)
                     /\ areas' = [areas EXCEPT ![s] = @ \cup {[iova |-> r.iova, size |-> r.size, pages |-> Min(FreePObj(areas))]}]
    /\ UNCHANGED <<groupOpen, bound, attached, ioas>>

(* IOMMU_IOAS_UNMAP, iopt_unmap_iova_range: areas are freed in IOVA order; an area
   reaching outside the range stops the walk with ENOENT, keeping the ones already
   freed (IOAS-UNMAP-SPLIT-ENOENT); nothing in range is ENOENT (IOAS-UNMAP-EMPTY-ENOENT). *)
UnmapHits(s, r) == {a \in areas[s] : Overlap(a, r)}
Splits(s, r) == {a \in UnmapHits(s, r) : a.iova < r.iova \/ Last(a) > Last(r)}
Freed(s, r) ==
    IF Splits(s, r) = {} THEN UnmapHits(s, r)
    ELSE LET stop == Min({a.iova : a \in Splits(s, r)}) IN {a \in UnmapHits(s, r) : a.iova < stop}

IoasUnmap(s, r) ==
    /\ InSpace(r)
    /\ CASE s \notin ioas -> Ret("IoasUnmap", "", s, r, 0, 0, "ENOENT", 0) /\ UNCHANGED areas
         [] OTHER -> /\ Ret("IoasUnmap", "", s, r, 0, 0,
                            IF Splits(s, r) = {} /\ UnmapHits(s, r) # {} THEN "ok" ELSE "ENOENT",
                            IF Splits(s, r) = {} THEN SumSizes(UnmapHits(s, r)) ELSE 0)
                     /\ areas' = [areas EXCEPT ![s] = @ \ Freed(s, r)]
    /\ UNCHANGED <<groupOpen, bound, attached, ioas>>

(* IOMMU_IOAS_COPY of one whole source area, or of a hole (ioas.c iommufd_ioas_copy:
   source IOAS, then iopt_get_pages (ENOENT on a hole, IOAS-COPY-SRC-HOLE), then the
   destination IOAS, then the MAP rules).  The new area shares the source's
   iopt_pages (IOAS-COPY-SHARES-PAGES). *)
CopySources(s) == {RangeOf(a) : a \in areas[s]} \cup {r \in Ranges : InSpace(r) /\ \A a \in areas[s] : ~Overlap(a, r)}

IoasCopy(s, r, t, i) ==
    LET dr == [iova |-> i, size |-> r.size] IN
    /\ InSpace(r) /\ InSpace(dr)
    /\ s \in ioas => r \in CopySources(s)
    /\ CASE s \notin ioas -> Ret("IoasCopy", "", s, r, t, i, "ENOENT", 0) /\ UNCHANGED areas
         [] r \notin {RangeOf(a) : a \in areas[s]} -> Ret("IoasCopy", "", s, r, t, i, "ENOENT", 0) /\ UNCHANGED areas
         [] t \notin ioas -> Ret("IoasCopy", "", s, r, t, i, "ENOENT", 0) /\ UNCHANGED areas
         [] \E a \in areas[t] : Overlap(a, dr) -> Ret("IoasCopy", "", s, r, t, i, "EEXIST", 0) /\ UNCHANGED areas
         [] OTHER -> LET src == CHOOSE a \in areas[s] : RangeOf(a) = r IN
                     /\ Ret("IoasCopy", "", s, r, t, i, "ok", 0)
                     /\ areas' = [areas EXCEPT ![t] = @ \cup {[iova |-> i, size |-> r.size, pages |-> src.pages]}]
    /\ UNCHANGED <<groupOpen, bound, attached, ioas>>

Actions ==
    \/ \E d \in Devices : \/ OpenGroup(d) \/ CloseGroup(d) \/ Bind(d) \/ Detach(d) \/ DestroyDevice(d)
                          \/ \E s \in Slots : Attach(d, s)
    \/ IoasAlloc
    \/ \E s \in Slots : \/ IoasDestroy(s)
                        \/ \E r \in Ranges : IoasMap(s, r)
                        \/ \E r \in UnmapRanges : IoasUnmap(s, r)
                        \/ \E r \in Ranges, t \in Slots, i \in Pages : IoasCopy(s, r, t, i)

(* pins follows the areas and attachments every step (see Repin). *)
Next == Actions /\ Repin

Spec == Init /\ [][Next]_vars

(* The state without the record of the last call and with iopt_pages ids renamed
   canonically (each by the lowest slot*NPages+iova that uses it): the VIEW under
   which model checking counts states.  pins is a function of the rest while
   IOMMUFD_SINGLE_PIN_PER_PAGE holds, and is left out. *)
Canon(p) == Min({k \in 0..((NIoas + 1) * NPages) :
                    \E s \in Slots : \E a \in areas[s] : a.pages = p /\ k = s * NPages + a.iova})
CanonAreas == [s \in Slots |-> {[iova |-> a.iova, size |-> a.size, pages |-> Canon(a.pages)] : a \in areas[s]}]
StateView == <<groupOpen, bound, attached, ioas, CanonAreas>>

-----------------------------------------------------------------------------
(* Invariants; each name is a requirement ID with "_" for "-". *)
TypeOK ==
    /\ groupOpen \in [Devices -> BOOLEAN]
    /\ bound \in [Devices -> Nat]
    /\ attached \in [Devices -> 0..NIoas]
    /\ ioas \subseteq Slots
    /\ pins \in [PObj -> Nat]

(* A device is bound at most once, to one iommufd (vfio_df_ioctl_bind_iommufd). *)
IOMMUFD_ONE_BIND_PER_DEVICE == \A d \in Devices : bound[d] <= 1

(* A device bound through its cdev and its group node are never both in use
   (vfio_device_block_group / vfio_group_fops_open). *)
CDEV_GROUP_EXCLUSIVE == \A d \in Devices : ~(bound[d] > 0 /\ groupOpen[d])

(* The areas of an IOAS never overlap; a free slot holds none (iopt_alloc_area_pages). *)
IOAS_AREAS_DISJOINT ==
    /\ \A s \in Slots : \A a, b \in areas[s] : a # b => ~Overlap(RangeOf(a), RangeOf(b))
    /\ \A s \in Slots \ ioas : areas[s] = {}

(* Each iopt_pages is pinned exactly once while some domain maps it, however many
   IOASes (COPY) and domains share it, and not at all otherwise (pages.c). *)
IOMMUFD_SINGLE_PIN_PER_PAGE ==
    \A p \in PObj : pins[p] = (IF NeedPin(areas, attached, p) THEN 1 ELSE 0)

(* Only a bound device is attached, and only to a live IOAS (an IOAS in use by an
   HWPT cannot be destroyed: IOMMU_DESTROY EBUSY). *)
IOMMUFD_ATTACH_NEEDS_BIND ==
    \A d \in Devices : attached[d] # 0 => (bound[d] > 0 /\ attached[d] \in ioas)
=============================================================================
