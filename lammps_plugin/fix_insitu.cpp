// glasscam: fix insitu (see fix_insitu.h)

#include "fix_insitu.h"

#include "comm.h"
#include "error.h"
#include "update.h"
#include "utils.h"

#include <set>

using namespace LAMMPS_NS;
using namespace FixConst;

static const char *fix_usage = "fix ID group insitu N module:function [key value ...]";

// shared with the insitu command: parse `module:function [key value ...]`
namespace glasscam {
void parse_hook_args(LAMMPS *lmp, const std::string &what, const char *usage, int narg,
                     char **arg, std::string &spec, KeyValues &kw)
{
  if (narg < 1) lmp->error->all(FLERR, "Illegal {} command: missing module:function ({})", what, usage);
  spec = arg[0];
  auto colon = spec.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == spec.size() ||
      spec.find(':', colon + 1) != std::string::npos)
    lmp->error->all(FLERR, "Illegal {} command: expected module:function, got '{}' ({})", what,
                    spec, usage);
  if ((narg - 1) % 2 != 0)
    lmp->error->all(FLERR, "Illegal {} command: keyword '{}' has no value ({})", what,
                    arg[narg - 1], usage);
  std::set<std::string> seen;
  for (int i = 1; i < narg; i += 2) {
    if (!seen.insert(arg[i]).second)
      lmp->error->all(FLERR, "Illegal {} command: keyword '{}' given twice", what, arg[i]);
    kw.emplace_back(arg[i], arg[i + 1]);
  }
}
}    // namespace glasscam

/* ---------------------------------------------------------------------- */

FixInsitu::FixInsitu(LAMMPS *lmp, int narg, char **arg) : Fix(lmp, narg, arg), last_step(-1)
{
  if (narg < 5) error->all(FLERR, "Illegal fix insitu command: too few arguments ({})", fix_usage);
  if (!utils::is_integer(arg[3]))
    error->all(FLERR, "Illegal fix insitu command: N must be a positive integer, got '{}' ({})",
               arg[3], fix_usage);
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
