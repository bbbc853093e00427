/* glasscam: embedded CPython host for the insitu styles.
 *
 * Starts the interpreter once per process when LAMMPS runs without one (the
 * `lmp` binary), or borrows the running one when LAMMPS was created from
 * Python.  All Python-side logic lives in insitu/_bridge.py; this layer only
 * converts arguments and moves error text back to LAMMPS.
 */
#ifndef GLASSCAM_PYHOST_H
#define GLASSCAM_PYHOST_H

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
// (traceback) for the screen.
struct PyOutcome {
  bool ok = true;
  std::string summary;
  std::string details;
};

// A resolved `module:function` bound to a lammps.lammps object and keywords.
class PyHook {
 public:
  PyHook() = default;
  PyHook(const PyHook &) = delete;
  PyHook &operator=(const PyHook &) = delete;
  ~PyHook();

  // import the module and look up the function (collective-free)
  PyOutcome create(LAMMPS_NS::LAMMPS *lmp, const std::string &spec, const KeyValues &kw);
  // call function(lmp, step, **kw)
  PyOutcome call(long long step);
  bool valid() const { return hook != nullptr; }

 private:
  void *hook = nullptr;    // PyObject*, kept opaque so Python.h stays out of LAMMPS headers
};

// Reduce `local` over the partition (world): if any rank failed, the failing
// ranks print their details and every rank calls error->all together.
void raise_if_failed_anywhere(LAMMPS_NS::LAMMPS *lmp, const PyOutcome &local,
                              const std::string &context);

}    // namespace glasscam

#endif
