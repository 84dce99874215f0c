-------------------------- MODULE IommufdBindTwice --------------------------
(***************************************************************************)
(* A deliberately broken IOMMUFD spec: BindTwice is VFIO_DEVICE_BIND_IOMMUFD *)
(* without the "one device cannot be bound twice" check of                 *)
(* vfio_df_ioctl_bind_iommufd.  TLC must find IOMMUFD_ONE_BIND_PER_DEVICE  *)
(* violated, with a two-bind counterexample (tests/test_spec_models.py).  *)
(***************************************************************************)
EXTENDS Iommufd

BindTwice(d) ==
    /\ ~groupOpen[d]
    /\ Ret("Bind", d, 0, NoRange, 0, 0, "ok", 0)
    /\ bound' = [bound EXCEPT ![d] = @ + 1]
    /\ UNCHANGED <<groupOpen, attached, ioas, areas>>

BrokenNext == (Actions \/ \E d \in Devices : BindTwice(d)) /\ Repin
=============================================================================
