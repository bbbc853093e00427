// glasscam: registration of the `insitu` fix and command styles.

#include "plugin_abi.h"

#include "fix_insitu.h"
#include "insitu_command.h"

using namespace LAMMPS_NS;

static Fix *make_fix_insitu(LAMMPS *lmp, int narg, char **arg)
{
  return new FixInsitu(lmp, narg, arg);
}

static Command *make_insitu_command(LAMMPS *lmp)
{
  return new InsituCommand(lmp);
}

extern "C" __attribute__((visibility("default"))) void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto register_style = (lammpsplugin_regfunc) regfunc;
  lammpsplugin_t p;

  p.version = GLASSCAM_LAMMPS_VERSION;
  p.author = "glasscam";
  p.handle = handle;

  p.style = "fix";
  p.name = "insitu";
  p.info = "glasscam fix insitu: call a Python function every N steps";
  p.creator.v2 = (glasscam_factory_args *) &make_fix_insitu;
  (*register_style)(&p, lmp);

  p.style = "command";
  p.name = "insitu";
  p.info = "glasscam insitu command: call a Python function once";
  p.creator.v1 = (glasscam_factory_noargs *) &make_insitu_command;
  (*register_style)(&p, lmp);
}
