// glasscam: embedded CPython host for the insitu styles (see pyhost.h).

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "pyhost.h"

#include "comm.h"
#include "error.h"
#include "lammps.h"
#include "universe.h"
#include "utils.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <dlfcn.h>
#include <sys/stat.h>

#ifndef GLASSCAM_BUILD_PYTHON
#define GLASSCAM_BUILD_PYTHON ""
#endif

using namespace LAMMPS_NS;

namespace glasscam {

namespace {

bool we_own_interpreter = false;       // Py_Initialize was called by this plugin
PyThreadState *main_tstate = nullptr;    // saved while LAMMPS runs
int mpi_self_keyval = MPI_KEYVAL_INVALID;
PyObject *bridge_create = nullptr;    // insitu._bridge.create

bool is_file(const std::string &path)
{
  struct stat st;
  return !path.empty() && (stat(path.c_str(), &st) == 0) && S_ISREG(st.st_mode);
}

std::string dirname_of(const std::string &path)
{
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

// The interpreter whose site-packages (and editable-install hooks) must be
// visible: $GLASSCAM_PYTHON, else the virtual environment this plugin is
// installed in (first parent directory holding pyvenv.cfg), else
// $VIRTUAL_ENV, else the Python that built the plugin.  Empty: libpython default.
std::string find_program_name()
{
  const char *env = getenv("GLASSCAM_PYTHON");
  if (env && *env) return env;

  const std::string exe_names[] = {"python" + std::to_string(PY_MAJOR_VERSION) + "." +
                                       std::to_string(PY_MINOR_VERSION),
                                   "python" + std::to_string(PY_MAJOR_VERSION), "python"};
  auto python_in = [&](const std::string &prefix) -> std::string {
    for (const auto &name : exe_names)
      if (is_file(prefix + "/bin/" + name)) return prefix + "/bin/" + name;
    return "";
  };

  Dl_info info;
  if (dladdr((void *) &find_program_name, &info) && info.dli_fname) {
    std::string dir = dirname_of(info.dli_fname);
    while (dir.size() > 1) {
      if (is_file(dir + "/pyvenv.cfg")) {
        auto exe = python_in(dir);
        if (!exe.empty()) return exe;
      }
      dir = dirname_of(dir);
    }
  }

  env = getenv("VIRTUAL_ENV");
  if (env && *env) {
    auto exe = python_in(env);
    if (!exe.empty()) return exe;
  }
  if (is_file(GLASSCAM_BUILD_PYTHON)) return GLASSCAM_BUILD_PYTHON;
  return "";
}

void finalize_interpreter()
{
  if (!we_own_interpreter) return;
  we_own_interpreter = false;
  if (!Py_IsInitialized()) return;
  PyEval_RestoreThread(main_tstate);
  main_tstate = nullptr;
  Py_CLEAR(bridge_create);
  // runs atexit handlers and garbage collection: open Zarr stores flush here
  if (Py_FinalizeEx() < 0) fprintf(stderr, "insitu: errors while finalizing Python\n");
}

// MPI_Finalize deletes the attributes of MPI_COMM_SELF first, while MPI is
// still usable: finalize Python there if the plugin is still loaded then.
int on_mpi_finalize(MPI_Comm, int, void *, void *)
{
  finalize_interpreter();
  return MPI_SUCCESS;
}

// dlclose() of the plugin (LAMMPS calls lammps_plugin_finalize() before
// MPI_Finalize): finalize Python and drop the MPI hook that points into this DSO.
__attribute__((destructor)) void on_unload()
{
  if (mpi_self_keyval != MPI_KEYVAL_INVALID) {
    int finalized = 1;
    MPI_Finalized(&finalized);
    if (!finalized) {
      MPI_Comm_delete_attr(MPI_COMM_SELF, mpi_self_keyval);    // calls on_mpi_finalize
      MPI_Comm_free_keyval(&mpi_self_keyval);
    }
    mpi_self_keyval = MPI_KEYVAL_INVALID;
  }
  finalize_interpreter();
}

// Text of the pending Python exception (with traceback); clears it.
std::string take_python_error()
{
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  if (!type) return "unknown Python error";
  PyErr_NormalizeException(&type, &value, &tb);
  std::string text;
  PyObject *mod = PyImport_ImportModule("traceback");
  PyObject *lines = nullptr;
  if (mod)
    lines = PyObject_CallMethod(mod, "format_exception", "OOO", type, value ? value : Py_None,
                                tb ? tb : Py_None);
  if (lines) {
    PyObject *empty = PyUnicode_FromString("");
    PyObject *joined = PyUnicode_Join(empty, lines);
    if (joined) text = PyUnicode_AsUTF8(joined);
    Py_XDECREF(joined);
    Py_XDECREF(empty);
  }
  PyErr_Clear();
  if (text.empty()) {
    PyObject *s = value ? PyObject_Str(value) : nullptr;
    text = s ? PyUnicode_AsUTF8(s) : "unknown Python error";
    Py_XDECREF(s);
    PyErr_Clear();
  }
  Py_XDECREF(lines);
  Py_XDECREF(mod);
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(tb);
  return text;
}

std::string last_line(const std::string &text)
{
  auto end = text.find_last_not_of("\n ");
  if (end == std::string::npos) return text;
  auto start = text.rfind('\n', end);
  return text.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1) + 1);
}

PyOutcome failure(const std::string &summary, const std::string &details)
{
  PyOutcome out;
  out.ok = false;
  out.summary = summary;
  out.details = details;
  return out;
}

// (summary, details) tuple from the bridge -> PyOutcome
PyOutcome outcome_from(PyObject *pair)
{
  if (pair == Py_None) return PyOutcome();
  PyObject *s = PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2 ? PyTuple_GET_ITEM(pair, 0)
                                                                      : nullptr;
  PyObject *d = s ? PyTuple_GET_ITEM(pair, 1) : nullptr;
  const char *cs = (s && PyUnicode_Check(s)) ? PyUnicode_AsUTF8(s) : nullptr;
  const char *cd = (d && PyUnicode_Check(d)) ? PyUnicode_AsUTF8(d) : nullptr;
  if (!cs || !cd) {
    PyErr_Clear();
    return failure("insitu bridge returned an unexpected value", "");
  }
  return failure(cs, cd);
}

// Start (or join) the interpreter and import the bridge.  Must be called
// without the GIL; returns with the GIL released.
PyOutcome ensure_interpreter()
{
  if (!Py_IsInitialized()) {
    // the plugin may have been dlopen()ed with local symbol scope: make
    // libpython's symbols global so that extension modules (numpy) resolve them
    Dl_info info;
    if (dladdr((void *) &Py_IsInitialized, &info) && info.dli_fname)
      dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);

    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0;    // keep SIGINT/SIGTERM for LAMMPS/mpirun
    config.parse_argv = 0;
    config.buffered_stdio = 0;    // hook output is not lost if LAMMPS aborts
    std::string program = find_program_name();
    PyStatus status = PyStatus_Ok();
    if (!program.empty())
      status = PyConfig_SetBytesString(&config, &config.program_name, program.c_str());
    if (!PyStatus_Exception(status)) {
      char arg0[] = "lmp";
      char *argv[] = {arg0};
      status = PyConfig_SetBytesArgv(&config, 1, argv);
    }
    if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
      std::string msg = "cannot initialize the embedded Python interpreter";
      if (status.func) msg += std::string(" (") + status.func + ")";
      if (status.err_msg) msg += std::string(": ") + status.err_msg;
      return failure(msg, msg + " using program name '" + program + "'\n");
    }
    we_own_interpreter = true;
    // like `python -c`: modules next to the input deck (cwd) are importable
    PyRun_SimpleString("import sys\nif '' not in sys.path: sys.path.insert(0, '')\n");

    int mpi_up = 0;
    MPI_Initialized(&mpi_up);
    if (mpi_up && mpi_self_keyval == MPI_KEYVAL_INVALID) {
      MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, on_mpi_finalize, &mpi_self_keyval, nullptr);
      MPI_Comm_set_attr(MPI_COMM_SELF, mpi_self_keyval, nullptr);
    }
    main_tstate = PyEval_SaveThread();
  }

  if (bridge_create) return PyOutcome();
  PyGILState_STATE gil = PyGILState_Ensure();
  PyOutcome out;
  PyObject *mod = PyImport_ImportModule("insitu._bridge");
  if (mod) bridge_create = PyObject_GetAttrString(mod, "create");
  if (!bridge_create) {
    std::string tb = take_python_error();
    std::string where;
    PyObject *exe = PySys_GetObject("executable");    // borrowed
    if (exe && PyUnicode_Check(exe)) where = PyUnicode_AsUTF8(exe);
    out = failure("cannot import insitu._bridge in the embedded Python (" + where +
                      "); install glasscam into that environment or set GLASSCAM_PYTHON",
                  tb);
  }
  Py_XDECREF(mod);
  PyGILState_Release(gil);
  return out;
}

}    // namespace

/* ---------------------------------------------------------------------- */

PyHook::~PyHook()
{
  if (hook && Py_IsInitialized()) {
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_CLEAR(*reinterpret_cast<PyObject **>(&hook));
    PyGILState_Release(gil);
  }
  hook = nullptr;
}

PyOutcome PyHook::create(LAMMPS *lmp, const std::string &spec, const KeyValues &kw)
{
  PyOutcome out = ensure_interpreter();
  if (!out.ok) return out;

  PyGILState_STATE gil = PyGILState_Ensure();
  PyObject *capsule = PyCapsule_New((void *) lmp, nullptr, nullptr);
  PyObject *kwargs = PyDict_New();
  for (const auto &item : kw) {
    PyObject *v = PyUnicode_FromString(item.second.c_str());
    PyDict_SetItemString(kwargs, item.first.c_str(), v);
    Py_XDECREF(v);
  }
  PyObject *result = PyObject_CallFunction(bridge_create, "OKsO", capsule,
                                           (unsigned long long) (uintptr_t) lmp, spec.c_str(),
                                           kwargs);
  if (!result) {
    std::string tb = take_python_error();
    out = failure("insitu bridge failed: " + last_line(tb), tb);
  } else if (!PyTuple_Check(result) || PyTuple_GET_SIZE(result) != 2) {
    out = failure("insitu bridge returned an unexpected value", "");
  } else if (PyTuple_GET_ITEM(result, 0) != Py_None) {
    hook = PyTuple_GET_ITEM(result, 0);
    Py_INCREF((PyObject *) hook);
  } else {
    out = outcome_from(PyTuple_GET_ITEM(result, 1));
  }
  Py_XDECREF(result);
  Py_XDECREF(kwargs);
  Py_XDECREF(capsule);
  PyGILState_Release(gil);
  return out;
}

PyOutcome PyHook::call(long long step)
{
  if (!hook) return failure("insitu hook is not initialized", "");
  PyOutcome out;
  PyGILState_STATE gil = PyGILState_Ensure();
  PyObject *pystep = PyLong_FromLongLong(step);
  PyObject *result = PyObject_CallOneArg((PyObject *) hook, pystep);
  if (!result) {
    std::string tb = take_python_error();
    out = failure(last_line(tb), tb);
  } else if (result != Py_None) {
    out = outcome_from(result);
  }
  Py_XDECREF(result);
  Py_XDECREF(pystep);
  PyGILState_Release(gil);
  return out;
}

/* ---------------------------------------------------------------------- */

void raise_if_failed_anywhere(LAMMPS *lmp, const PyOutcome &local, const std::string &context)
{
  MPI_Comm world = lmp->world;
  int me = lmp->comm->me, nprocs = lmp->comm->nprocs;
  int mine[2] = {local.ok ? 0 : 1, local.ok ? nprocs : me};
  int nfail = 0, first = nprocs;
  MPI_Allreduce(&mine[0], &nfail, 1, MPI_INT, MPI_SUM, world);
  if (nfail == 0) return;
  MPI_Allreduce(&mine[1], &first, 1, MPI_INT, MPI_MIN, world);

  if (!local.ok && !local.details.empty() && !(me == 0 && local.details == local.summary + "\n")) {
    std::string head = fmt::format("insitu: {} failed on rank {}", context, me);
    if (lmp->universe->nworlds > 1) head += fmt::format(" of partition {}", lmp->universe->iworld + 1);
    std::string text = head + ":\n" + local.details;
    if (text.back() != '\n') text += '\n';
    // on the terminal in any case: ranks > 0 have no screen, and with
    // -partition the screen is a file (screen.N)
    FILE *out = lmp->screen;
    if (out) {
      fputs(text.c_str(), out);
      fflush(out);
    }
    if (out != stdout && out != stderr) {
      fputs(text.c_str(), stderr);
      fflush(stderr);
    }
    if (lmp->logfile) {
      fputs(text.c_str(), lmp->logfile);
      fflush(lmp->logfile);
    }
  }

  std::string msg;
  if (first == 0 && me == 0)
    msg = fmt::format("{}: {}", context, local.summary);
  else
    msg = fmt::format("{} failed on rank {} (Python traceback printed above)", context, first);
  if (nfail > 1) msg += fmt::format(" [{} of {} ranks failed]", nfail, nprocs);
  lmp->error->all(FLERR, msg);
}

}    // namespace glasscam
