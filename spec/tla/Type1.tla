------------------------------- MODULE Type1 -------------------------------
(***************************************************************************)
(* The legacy VFIO container, its groups and the type1 IOMMU backend.      *)
(* Seed: Documentation/vfio.rst (seeds 000/001: "Groups, Devices, and      *)
(* IOMMUs", the example program).  Kernel: drivers/vfio/container.c        *)
(* (vfio_ioctl_set_iommu, vfio_group_detach_container), drivers/vfio/     *)
(* group.c (vfio_group_fops_open, vfio_group_ioctl_set_container,          *)
(* vfio_group_ioctl_unset_container), drivers/vfio/vfio_iommu_type1.c      *)
(* (vfio_dma_do_map, vfio_dma_do_unmap).                                   *)
(*                                                                         *)
(* One container, groups of one vfio-pci device each, IOVA and sizes in    *)
(* pages.  Every action records the call it models in lastCall and the     *)
(* kernel's answer in lastResult (errno name or "ok"); lastOut is the      *)
(* output the call returns (bytes unmapped, in pages), so a behaviour is a *)
(* trace with expectations.                                                *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS Groups,   \* logical group names, e.g. {"g0", "g1"}
          NPages,   \* IOVA pages 0..NPages-1 (iova = page * 4096)
          MaxLen    \* largest mapping, in pages

VARIABLES groupOpen,    \* group -> the group node is open (one opener only)
          inContainer,  \* group -> VFIO_GROUP_SET_CONTAINER done
          iommu,        \* "none" | "v1" | "v2": VFIO_SET_IOMMU of the container
          dmas,         \* set of [iova, size]: the container's vfio_dma mappings
          lastCall, lastResult, lastOut

Pages == 0..(NPages - 1)

vars == <<groupOpen, inContainer, iommu, dmas, lastCall, lastResult, lastOut>>

Ranges == {[iova |-> i, size |-> s] : i \in Pages, s \in 1..MaxLen}
UnmapRanges == {[iova |-> i, size |-> s] : i \in Pages, s \in 1..NPages}   \* an unmap may span mappings
Last(r) == r.iova + r.size - 1
InSpace(r) == Last(r) \in Pages
Overlap(a, b) == a.iova <= Last(b) /\ b.iova <= Last(a)

RECURSIVE SumSizes(_)
SumSizes(S) == IF S = {} THEN 0 ELSE LET d == CHOOSE d \in S : TRUE IN d.size + SumSizes(S \ {d})

Call(op, g, r, t) == [op |-> op, group |-> g, iova |-> r.iova, size |-> r.size, type |-> t]
NoRange == [iova |-> 0, size |-> 0]

Ret(op, g, r, t, res, out) ==
    /\ lastCall' = Call(op, g, r, t)
    /\ lastResult' = res
    /\ lastOut' = out

Attached == {g \in Groups : inContainer[g]}

Init ==
    /\ groupOpen = [g \in Groups |-> FALSE]
    /\ inContainer = [g \in Groups |-> FALSE]
    /\ iommu = "none"
    /\ dmas = {}
    /\ lastCall = Call("Init", "", NoRange, "")
    /\ lastResult = "ok"
    /\ lastOut = 0

(* open("/dev/vfio/$GROUP"): single opener (vfio_group_fops_open, GROUP-SINGLE-OPEN). *)
OpenGroup(g) ==
    IF groupOpen[g]
    THEN /\ Ret("OpenGroup", g, NoRange, "", "EBUSY", 0)
         /\ UNCHANGED <<groupOpen, inContainer, iommu, dmas>>
    ELSE /\ Ret("OpenGroup", g, NoRange, "", "ok", 0)
         /\ groupOpen' = [groupOpen EXCEPT ![g] = TRUE]
         /\ UNCHANGED <<inContainer, iommu, dmas>>

(* Detaching the last group releases the backend: vfio_group_detach_container
   (CONTAINER-LAST-GROUP-RELEASES-IOMMU). *)
Detach(g) ==
    /\ inContainer' = [inContainer EXCEPT ![g] = FALSE]
    /\ IF Attached = {g}
       THEN iommu' = "none" /\ dmas' = {}
       ELSE UNCHANGED <<iommu, dmas>>

(* close(group fd) with no device fd open: vfio_group_fops_release. *)
CloseGroup(g) ==
    /\ groupOpen[g]
    /\ Ret("CloseGroup", g, NoRange, "", "ok", 0)
    /\ groupOpen' = [groupOpen EXCEPT ![g] = FALSE]
    /\ IF inContainer[g] THEN Detach(g) ELSE UNCHANGED <<inContainer, iommu, dmas>>

(* VFIO_GROUP_SET_CONTAINER: EINVAL when the group already has one
   (GROUP-SET-CONTAINER-ALREADY); with the IOMMU set the group joins it at once. *)
SetContainer(g) ==
    /\ groupOpen[g]
    /\ IF inContainer[g]
       THEN Ret("SetContainer", g, NoRange, "", "EINVAL", 0) /\ UNCHANGED <<inContainer, iommu, dmas>>
       ELSE /\ Ret("SetContainer", g, NoRange, "", "ok", 0)
            /\ inContainer' = [inContainer EXCEPT ![g] = TRUE]
            /\ UNCHANGED <<iommu, dmas>>
    /\ UNCHANGED groupOpen

(* VFIO_GROUP_UNSET_CONTAINER: EINVAL without one (GROUP-UNSET-CONTAINER-NONE). *)
UnsetContainer(g) ==
    /\ groupOpen[g]
    /\ IF ~inContainer[g]
       THEN Ret("UnsetContainer", g, NoRange, "", "EINVAL", 0) /\ UNCHANGED <<inContainer, iommu, dmas>>
       ELSE Ret("UnsetContainer", g, NoRange, "", "ok", 0) /\ Detach(g)
    /\ UNCHANGED groupOpen

(* VFIO_SET_IOMMU: EINVAL with no group or a driver already set (vfio_ioctl_set_iommu:
   CONTAINER-SET-IOMMU-NO-GROUP, CONTAINER-SET-IOMMU-TWICE). *)
SetIommu(t) ==
    /\ IF Attached = {} \/ iommu # "none"
       THEN Ret("SetIommu", "", NoRange, t, "EINVAL", 0) /\ UNCHANGED iommu
       ELSE Ret("SetIommu", "", NoRange, t, "ok", 0) /\ iommu' = t
    /\ UNCHANGED <<groupOpen, inContainer, dmas>>

(* VFIO_IOMMU_MAP_DMA (READ|WRITE): EINVAL before SET_IOMMU (vfio_fops_unl_ioctl,
   CONTAINER-IOCTL-BEFORE-SET-IOMMU); EEXIST on any overlap (vfio_dma_do_map,
   TYPE1-MAP-OVERLAP). *)
MapDma(r) ==
    /\ InSpace(r)
    /\ CASE iommu = "none" -> Ret("MapDma", "", r, "", "EINVAL", 0) /\ UNCHANGED dmas
         [] \E d \in dmas : Overlap(d, r) -> Ret("MapDma", "", r, "", "EEXIST", 0) /\ UNCHANGED dmas
         [] OTHER -> Ret("MapDma", "", r, "", "ok", 0) /\ dmas' = dmas \cup {r}
    /\ UNCHANGED <<groupOpen, inContainer, iommu>>

(* VFIO_IOMMU_UNMAP_DMA, vfio_dma_do_unmap.  v2: a range starting or ending inside a
   mapping is refused whole with EINVAL (TYPE1-UNMAP-NO-BISECT); an empty range is
   success, size 0 (TYPE1-UNMAP-EMPTY-RANGE).  v1: the first mapping met starting
   before iova stops the walk (size 0, TYPE1-V1-UNMAP-OFFSET-ZERO); a mapping whose
   first IOVA is in range goes whole (TYPE1-V1-UNMAP-WHOLE-MAPPING). *)
V2Bisects(r) == \E d \in dmas : (d.iova < r.iova /\ r.iova <= Last(d))
                               \/ (d.iova <= Last(r) /\ Last(r) < Last(d))
Hit(r) == {d \in dmas : Overlap(d, r)}
V1Stops(r) == \E d \in Hit(r) : d.iova < r.iova

UnmapDma(r) ==
    /\ InSpace(r)
    /\ CASE iommu = "none" -> Ret("UnmapDma", "", r, "", "EINVAL", 0) /\ UNCHANGED dmas
         [] iommu = "v2" /\ V2Bisects(r) -> Ret("UnmapDma", "", r, "", "EINVAL", 0) /\ UNCHANGED dmas
         [] iommu = "v1" /\ V1Stops(r) -> Ret("UnmapDma", "", r, "", "ok", 0) /\ UNCHANGED dmas
         [] OTHER -> Ret("UnmapDma", "", r, "", "ok", SumSizes(Hit(r))) /\ dmas' = dmas \ Hit(r)
    /\ UNCHANGED <<groupOpen, inContainer, iommu>>

Next ==
    \/ \E g \in Groups : OpenGroup(g) \/ CloseGroup(g) \/ SetContainer(g) \/ UnsetContainer(g)
    \/ \E t \in {"v1", "v2"} : SetIommu(t)
    \/ \E r \in Ranges : MapDma(r)
    \/ \E r \in UnmapRanges : UnmapDma(r)

Spec == Init /\ [][Next]_vars

-----------------------------------------------------------------------------
(* Invariants; each name is a requirement ID with "_" for "-". *)
TypeOK ==
    /\ groupOpen \in [Groups -> BOOLEAN]
    /\ inContainer \in [Groups -> BOOLEAN]
    /\ iommu \in {"none", "v1", "v2"}
    /\ dmas \subseteq Ranges
    /\ lastResult \in {"ok", "EINVAL", "EBUSY", "EEXIST"}

(* No two vfio_dma overlap (vfio_find_dma in vfio_dma_do_map). *)
TYPE1_MAP_NO_OVERLAP == \A a, b \in dmas : a # b => ~Overlap(a, b)

(* A group in the container has its node open; an IOMMU is set only while a group is
   attached and mappings exist only under an IOMMU (vfio_group_detach_container). *)
CONTAINER_LAST_GROUP_RELEASES_IOMMU ==
    /\ \A g \in Groups : inContainer[g] => groupOpen[g]
    /\ iommu # "none" => Attached # {}
    /\ dmas # {} => iommu # "none"

(* After a successful v2 unmap nothing of the requested range is mapped, and the size
   returned is whole mappings (vfio_dma_do_unmap). *)
TYPE1_UNMAP_NO_BISECT ==
    (lastCall.op = "UnmapDma" /\ lastResult = "ok" /\ iommu = "v2")
        => \A d \in dmas : ~Overlap(d, [iova |-> lastCall.iova, size |-> lastCall.size])

(* MAP/UNMAP before SET_IOMMU are EINVAL (vfio_fops_unl_ioctl). *)
CONTAINER_IOCTL_BEFORE_SET_IOMMU ==
    (lastCall.op \in {"MapDma", "UnmapDma"} /\ iommu = "none") => lastResult = "EINVAL"
=============================================================================
