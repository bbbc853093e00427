/* glasscam: embedded CPython host for the insitu styles.
 *
 * Starts the interpreter once per process when LAMMPS runs without one (the
 * `lmp` binary), or borrows the running one when LAMMPS was created from
 * Python.  All Python-side logic lives in glasscam.insitu._bridge; this layer
 * only converts arguments and moves error text back to LAMMPS.
 *
 * Lifetime of an interpreter started here: it is finalized exactly once, by the
 * first of
 *   - the deletion of the MPI_COMM_SELF attribute that MPI_Finalize performs
 *     before anything else (MPI still fully usable, no loader lock held), and
 *   - an atexit() handler (a host that exits without MPI_Finalize),
 * never from a static destructor: LAMMPS dlclose()s plugins (plugin_finalize(),
 * called by `lmp` right before MPI_Finalize) and destructors run under the
 * dynamic loader's lock there.  The plugin is linked with -z nodelete (and pinned
 * with RTLD_NODELETE at run time), so that dlclose() is a no-op and the callbacks
 * above stay mapped.  Py_FinalizeEx joins the non-daemon threads that hooks
 * started (threading._shutdown, incl. concurrent.futures pools) and then runs the
 * atexit handlers (Zarr flushes its stores, stops its event-loop thread).
 */
#ifndef GLASSCAM_PYHOST_H
#define GLASSCAM_PYHOST_H

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace LAMMPS_NS {
class LAMMPS;
}

namespace glasscam {

using KeyValues = std::vector<std::pair<std::string, std::string>>;

// Outcome of a Python-side action on this rank: ok, or a failure with a
// one-line summary (for the LAMMPS error message) and the full text
// (traceback) for the screen.  Both are UTF-8; characters that UTF-8 cannot
// encode (lone surrogates) arrive as backslash escapes.
struct PyOutcome {
  bool ok = true;
  std::string summary;
  std::string details;
};

// A resolved `module:function` bound to a lammps.lammps object and keywords.
class PyHook {
 public:
  PyHook();
  PyHook(const PyHook &) = delete;
  PyHook &operator=(const PyHook &) = delete;
  ~PyHook();

  // import the module and look up the function (collective-free)
  PyOutcome create(LAMMPS_NS::LAMMPS *lmp, const std::string &spec, const KeyValues &kw);
  // call function(lmp, step, **kw)
  PyOutcome call(long long step);
  bool valid() const;

 private:
  struct State;    // owns the Python object; defined in pyhost.cpp (Python.h stays out of here)
  std::unique_ptr<State> state;
};

// Reduce `local` over the partition (world): if any rank failed, the failing
// ranks print their details and every rank calls error->all together.
void raise_if_failed_anywhere(LAMMPS_NS::LAMMPS *lmp, const PyOutcome &local,
                              const std::string &context);

}    // namespace glasscam

#endif
