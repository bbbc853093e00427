// glasscam: fix insitu (see fix_insitu.h)

#include "fix_insitu.h"

#include "hook_args.h"

#include "comm.h"
#include "error.h"
#include "update.h"
#include "utils.h"

using namespace LAMMPS_NS;
using namespace FixConst;

static const char *fix_usage = "fix ID group insitu N module:function [key value ...]";

/* ---------------------------------------------------------------------- */

FixInsitu::FixInsitu(LAMMPS *lmp, int narg, char **arg) : Fix(lmp, narg, arg), last_step(-1)
{
  if (narg < 5) error->all(FLERR, "Illegal fix insitu command: too few arguments ({})", fix_usage);
  if (!utils::is_integer(arg[3]))
    error->all(FLERR, "Illegal fix insitu command: N must be a positive integer, got '{}' ({})",
               glasscam::escape_bytes(arg[3]), fix_usage);
  nevery = utils::inumeric(FLERR, arg[3], false, lmp);
  if (nevery <= 0)
    error->all(FLERR, "Illegal fix insitu command: N must be a positive integer, got {}", nevery);

  glasscam::KeyValues kw;
  glasscam::parse_hook_args(lmp, "fix insitu", fix_usage, narg - 4, &arg[4], spec, kw);

  // resolve module:function now, before any MD step, on every rank
  auto outcome = hook.create(lmp, spec, kw);
  glasscam::raise_if_failed_anywhere(lmp, outcome, fmt::format("fix {} insitu {}", id, spec));

  if (comm->me == 0)
    utils::logmesg(lmp, "fix {} insitu: calling {}(lmp, step, **kw) every {} steps, {} keyword(s)\n",
                   id, spec, nevery, kw.size());
}

/* ---------------------------------------------------------------------- */

int FixInsitu::setmask()
{
  return END_OF_STEP;
}

/* ---------------------------------------------------------------------- */

void FixInsitu::setup(int)
{
  invoke();
}

/* ---------------------------------------------------------------------- */

void FixInsitu::end_of_step()
{
  invoke();
}

/* ---------------------------------------------------------------------- */

void FixInsitu::invoke()
{
  bigint step = update->ntimestep;
  if (step == last_step) return;
  last_step = step;
  auto outcome = hook.call(step);
  glasscam::raise_if_failed_anywhere(lmp, outcome,
                                     fmt::format("fix {} insitu {} at step {}", id, spec, step));
}
