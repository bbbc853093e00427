/* glasscam: fix ID group insitu N module:function [key value ...]
 *
 * Calls the Python function `function(lmp, step, **kw)` on every rank of the
 * partition once at setup of each run and every N steps (end_of_step);
 * `lmp` is a lammps.lammps object wrapping this instance and the keyword
 * values are the strings given in the deck.  A given timestep is handled at
 * most once (the setup of a follow-up run does not repeat the last step).
 */
#ifndef GLASSCAM_FIX_INSITU_H
#define GLASSCAM_FIX_INSITU_H

#include "fix.h"
#include "pyhost.h"

namespace LAMMPS_NS {

class FixInsitu : public Fix {
 public:
  FixInsitu(class LAMMPS *, int, char **);
  int setmask() override;
  void setup(int) override;
  void end_of_step() override;

 private:
  std::string spec;
  glasscam::PyHook hook;
  bigint last_step;
  void invoke();
};

}    // namespace LAMMPS_NS

#endif
