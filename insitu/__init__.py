"""glasscam.insitu — Python run inside LAMMPS (hooks of the `insitu` fix) and the pure kernels
and store schema they share with the offline analysis. Imports nothing heavy: it is imported by
every MPI rank of every LAMMPS partition."""
