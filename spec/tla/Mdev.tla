-------------------------------- MODULE Mdev --------------------------------
(***************************************************************************)
(* Mediated devices: create and remove through sysfs, available_instances. *)
(* Seed: 002 (Documentation/vfio-mediated-device.txt, "Using the mdev sysfs *)
(* interface", "Mediated device Hot plug").  Kernel: drivers/vfio/mdev/    *)
(* mdev_sysfs.c (create_store, remove_store, available_instances_show),    *)
(* mdev_core.c (mdev_device_create, mdev_device_remove) and the mtty      *)
(* sample (mtty_init_dev: ENOSPC without free ports, mtty_get_available).  *)
(* Each mdev here is created and removed with no device fd open, so its    *)
(* instance comes back at remove time (mtty_release_dev).                  *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS Types,   \* mdev_type names of the parent, e.g. {"mtty-1"}
          Uuids,   \* UUID names the writer uses, e.g. {"m0", "m1", "m2"}
          Total    \* available_instances of each type on a fresh parent

VARIABLES mdevs,   \* uuid -> "" (none) or the type it was created from
          avail,   \* type -> available_instances
          lastCall, lastResult, lastOut

vars == <<mdevs, avail, lastCall, lastResult, lastOut>>

Call(op, t, u) == [op |-> op, type |-> t, uuid |-> u]
Ret(op, t, u, res, out) == lastCall' = Call(op, t, u) /\ lastResult' = res /\ lastOut' = out
Of(t) == {u \in Uuids : mdevs[u] = t}

Init ==
    /\ mdevs = [u \in Uuids |-> ""]
    /\ avail = [t \in Types |-> Total]
    /\ lastCall = Call("Init", "", "")
    /\ lastResult = "ok"
    /\ lastOut = 0

(* write(UUID) to mdev_supported_types/<type>/create: EEXIST for a UUID in use
   (MDEV-CREATE-DUPLICATE), ENOSPC from mtty_init_dev when no instance is left
   (MDEV-CREATE-NO-INSTANCES). *)
Create(t, u) ==
    /\ CASE mdevs[u] # "" -> Ret("Create", t, u, "EEXIST", 0) /\ UNCHANGED <<mdevs, avail>>
         [] avail[t] = 0 -> Ret("Create", t, u, "ENOSPC", 0) /\ UNCHANGED <<mdevs, avail>>
         [] OTHER -> /\ Ret("Create", t, u, "ok", 0)
                     /\ mdevs' = [mdevs EXCEPT ![u] = t]
                     /\ avail' = [avail EXCEPT ![t] = @ - 1]

(* write "1" to /sys/bus/mdev/devices/<uuid>/remove (MDEV-REMOVE,
   MDEV-REMOVE-RETURNS-INSTANCE). *)
Remove(u) ==
    /\ mdevs[u] # ""
    /\ Ret("Remove", mdevs[u], u, "ok", 0)
    /\ avail' = [avail EXCEPT ![mdevs[u]] = @ + 1]
    /\ mdevs' = [mdevs EXCEPT ![u] = ""]

(* read mdev_supported_types/<type>/available_instances (MDEV-AVAILABLE-INSTANCES). *)
ReadAvailable(t) ==
    /\ Ret("ReadAvailable", t, "", "ok", avail[t])
    /\ UNCHANGED <<mdevs, avail>>

Next ==
    \/ \E t \in Types, u \in Uuids : Create(t, u)
    \/ \E u \in Uuids : Remove(u)
    \/ \E t \in Types : ReadAvailable(t)

Spec == Init /\ [][Next]_vars

TypeOK ==
    /\ mdevs \in [Uuids -> Types \cup {""}]
    /\ avail \in [Types -> 0..Total]

(* What the guest variant counts (VIEW): successors do not depend on lastCall, lastResult, lastOut. *)
StateView == <<mdevs, avail>>

(* available_instances plus the live mdevs of a type is the parent's capacity. *)
MDEV_INSTANCES_CONSERVED == \A t \in Types : avail[t] + Cardinality(Of(t)) = Total
=============================================================================
