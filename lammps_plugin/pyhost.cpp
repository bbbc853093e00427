// glasscam: embedded CPython host for the insitu styles (see pyhost.h).

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "pyhost.h"

#include "hook_args.h"    // escape_bytes

#include "comm.h"
#include "error.h"
#include "lammps.h"
#include "universe.h"
#include "utils.h"

#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <dlfcn.h>
#include <sys/stat.h>
#include <thread>

#ifndef GLASSCAM_BUILD_PYTHON
#define GLASSCAM_BUILD_PYTHON ""
#endif

using namespace LAMMPS_NS;

namespace glasscam {

namespace {

constexpr const char *BRIDGE_MODULE = "glasscam.insitu._bridge";

/* ----------------------------------------------------------------------
   RAII for the C API.  The GIL must be held wherever a PyRef is created,
   reset or destroyed: declare the GilGuard before the PyRefs of a scope.
------------------------------------------------------------------------- */

// Owning (strong) reference to a Python object, or none.
class PyRef {
 public:
  PyRef() noexcept = default;
  // take over a new reference (the result of a C-API call; nullptr allowed)
  static PyRef steal(PyObject *obj) noexcept { return PyRef(obj); }
  // add a reference to a borrowed one
  static PyRef borrow(PyObject *obj) noexcept
  {
    Py_XINCREF(obj);
    return PyRef(obj);
  }
  PyRef(PyRef &&other) noexcept : obj(other.obj) { other.obj = nullptr; }
  PyRef &operator=(PyRef &&other) noexcept
  {
    if (this != &other) {
      PyObject *old = obj;
      obj = other.obj;
      other.obj = nullptr;
      Py_XDECREF(old);
    }
    return *this;
  }
  PyRef(const PyRef &) = delete;
  PyRef &operator=(const PyRef &) = delete;
  ~PyRef() { Py_XDECREF(obj); }

  PyObject *get() const noexcept { return obj; }
  explicit operator bool() const noexcept { return obj != nullptr; }
  void reset() noexcept { *this = PyRef(); }
  // forget the object without touching its reference count: only for objects of an
  // interpreter that no longer exists
  void abandon() noexcept { obj = nullptr; }

 private:
  explicit PyRef(PyObject *o) noexcept : obj(o) {}
  PyObject *obj = nullptr;
};

// The GIL of the running interpreter, for the lifetime of the guard (any thread).
class GilGuard {
 public:
  GilGuard() : state(PyGILState_Ensure()) {}
  ~GilGuard() { PyGILState_Release(state); }
  GilGuard(const GilGuard &) = delete;
  GilGuard &operator=(const GilGuard &) = delete;

 private:
  PyGILState_STATE state;
};

/* ---------------------------------------------------------------------- */

// Process-wide state of the host.  Allocated once and never destroyed, so that no
// static destructor ever touches Python (it may be gone, or not ours).
struct HostState {
  bool owned = false;        // Py_InitializeFromConfig was called by this plugin ...
  bool finalized = false;    // ... and Py_FinalizeEx too (never restarted)
  std::thread::id init_thread;
  PyThreadState *main_tstate = nullptr;    // saved while LAMMPS runs
  int mpi_self_keyval = MPI_KEYVAL_INVALID;
  PyRef bridge_create;    // glasscam.insitu._bridge.create
};

HostState &host()
{
  static auto *state = new HostState;
  return *state;
}

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

/* ----------------------------------------------------------------------
   finalization of an interpreter started here (see pyhost.h)
------------------------------------------------------------------------- */

// Called without the GIL and without any loader lock: from MPI_Finalize (attribute
// callback) or from exit() (atexit handler); whichever comes first does the work.
void finalize_interpreter()
{
  HostState &h = host();
  if (!h.owned || h.finalized) return;
  h.finalized = true;
  if (!Py_IsInitialized()) return;
  if (std::this_thread::get_id() != h.init_thread) {
    // the saved thread state belongs to another thread: finalizing here would corrupt
    // the interpreter; leave it to the process exit
    fprintf(stderr, "insitu: not finalizing Python from a thread other than the one that "
                    "started it (atexit handlers and Zarr flushes are skipped)\n");
    return;
  }
  PyEval_RestoreThread(h.main_tstate);    // GIL held from here on
  h.main_tstate = nullptr;
  h.bridge_create.reset();
  // threading._shutdown (joins non-daemon threads and concurrent.futures pools that hooks
  // started), atexit handlers (Zarr flushes and stops its loop), garbage collection
  if (Py_FinalizeEx() < 0) fprintf(stderr, "insitu: errors while finalizing Python\n");
}

// MPI_Finalize deletes the attributes of MPI_COMM_SELF first, while MPI is still usable.
int on_mpi_finalize(MPI_Comm, int, void *, void *)
{
  finalize_interpreter();
  return MPI_SUCCESS;
}

// A host that never calls MPI_Finalize.
void finalize_at_exit()
{
  finalize_interpreter();
}

/* ----------------------------------------------------------------------
   text out of Python: never fails, never NULL
------------------------------------------------------------------------- */

// str(obj) as UTF-8; what UTF-8 cannot encode (lone surrogates) as backslash escapes.
std::string text_of(PyObject *obj, const char *fallback)
{
  if (!obj) return fallback;
  PyRef str = PyUnicode_Check(obj) ? PyRef::borrow(obj) : PyRef::steal(PyObject_Str(obj));
  if (!str) {
    PyErr_Clear();
    return fallback;
  }
  PyRef bytes = PyRef::steal(PyUnicode_AsEncodedString(str.get(), "utf-8", "backslashreplace"));
  char *data = nullptr;
  Py_ssize_t size = 0;
  if (!bytes || PyBytes_AsStringAndSize(bytes.get(), &data, &size) < 0 || !data) {
    PyErr_Clear();
    return fallback;
  }
  return std::string(data, static_cast<std::size_t>(size));
}

// Text of the pending Python exception (with traceback); clears it.
std::string take_python_error()
{
#if PY_VERSION_HEX >= 0x030C0000
  PyRef value = PyRef::steal(PyErr_GetRaisedException());
  if (!value) return "unknown Python error (no exception set)\n";
  PyRef type = PyRef::borrow(reinterpret_cast<PyObject *>(Py_TYPE(value.get())));
  PyRef tb = PyRef::steal(PyException_GetTraceback(value.get()));
#else
  PyObject *raw_type = nullptr, *raw_value = nullptr, *raw_tb = nullptr;
  PyErr_Fetch(&raw_type, &raw_value, &raw_tb);
  if (!raw_type) return "unknown Python error (no exception set)\n";
  PyErr_NormalizeException(&raw_type, &raw_value, &raw_tb);
  PyRef type = PyRef::steal(raw_type), value = PyRef::steal(raw_value),
        tb = PyRef::steal(raw_tb);
#endif

  std::string text;
  PyRef mod = PyRef::steal(PyImport_ImportModule("traceback"));
  PyRef lines;
  if (mod)
    lines = PyRef::steal(PyObject_CallMethod(mod.get(), "format_exception", "OOO", type.get(),
                                             value ? value.get() : Py_None,
                                             tb ? tb.get() : Py_None));
  if (lines) {
    PyRef empty = PyRef::steal(PyUnicode_FromStringAndSize("", 0));
    PyRef joined = empty ? PyRef::steal(PyUnicode_Join(empty.get(), lines.get())) : PyRef();
    if (joined) text = text_of(joined.get(), "");
  }
  PyErr_Clear();
  if (text.empty()) {
    // no traceback module, or formatting failed: type name and str(value)
    text = text_of(value ? value.get() : type.get(), "unknown Python error");
    PyErr_Clear();
  }
  if (text.back() != '\n') text += '\n';
  return text;
}

std::string last_line(const std::string &text)
{
  auto end = text.find_last_not_of("\n ");
  if (end == std::string::npos) return text;
  auto start = text.rfind('\n', end);
  start = (start == std::string::npos) ? 0 : start + 1;
  return text.substr(start, end - start + 1);
}

PyOutcome failure(const std::string &summary, const std::string &details)
{
  PyOutcome out;
  out.ok = false;
  out.summary = summary;
  out.details = details;
  return out;
}

// the pending Python exception as a failure "<what>: <last line of the traceback>"
PyOutcome python_failure(const std::string &what)
{
  std::string tb = take_python_error();
  return failure(what + ": " + last_line(tb), tb);
}

// (summary, details) tuple from the bridge -> PyOutcome
PyOutcome outcome_from(PyObject *pair)
{
  if (pair == Py_None) return PyOutcome();
  if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
      !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0)) || !PyUnicode_Check(PyTuple_GET_ITEM(pair, 1)))
    return failure(fmt::format("{} returned an unexpected value: {}", BRIDGE_MODULE,
                               text_of(pair, "<unprintable>")),
                   "");
  return failure(text_of(PyTuple_GET_ITEM(pair, 0), "<unprintable error summary>"),
                 text_of(PyTuple_GET_ITEM(pair, 1), "<unprintable error details>\n"));
}

// str from deck text; NULL (and a Python exception) unless it is valid UTF-8
PyRef decode_arg(const std::string &text)
{
  return PyRef::steal(
      PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "strict"));
}

/* ----------------------------------------------------------------------
   interpreter start
------------------------------------------------------------------------- */

// Keep this DSO mapped after LAMMPS dlclose()s it (also linked with -z nodelete): the
// MPI attribute callback and the atexit handler point into it.
PyOutcome pin_plugin()
{
  Dl_info info;
  if (!dladdr((void *) &on_mpi_finalize, &info) || !info.dli_fname)
    return failure("cannot locate the insitu plugin's own file (dladdr failed)", "");
  dlerror();
  if (!dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE)) {
    const char *why = dlerror();
    return failure(fmt::format("cannot pin {} in memory: {}", info.dli_fname,
                               why ? why : "unknown dlopen error"),
                   "");
  }
  return PyOutcome();
}

// Settings of a fresh interpreter; called with the GIL held right after initialization.
PyOutcome configure_fresh_interpreter()
{
  // like `python -c`: modules next to the input deck (cwd) are importable
  PyObject *path = PySys_GetObject("path");    // borrowed
  if (!path || !PyList_Check(path))
    return failure("the embedded Python has no sys.path list", "");
  PyRef cwd = PyRef::steal(PyUnicode_FromStringAndSize("", 0));
  if (!cwd) return python_failure("cannot set up sys.path of the embedded Python");
  int present = PySequence_Contains(path, cwd.get());
  if (present < 0 || (present == 0 && PyList_Insert(path, 0, cwd.get()) < 0))
    return python_failure("cannot set up sys.path of the embedded Python");
  return PyOutcome();
}

// Start the interpreter (once per process) unless one is running.  Must be called
// without the GIL; returns without it.
PyOutcome start_interpreter()
{
  HostState &h = host();
  if (h.finalized)
    return failure("the embedded Python interpreter has already been finalized "
                   "(MPI_Finalize or exit in progress)",
                   "");
  if (Py_IsInitialized()) return PyOutcome();

  PyOutcome pinned = pin_plugin();
  if (!pinned.ok) return pinned;

  // the plugin may have been dlopen()ed with local symbol scope: make libpython's
  // symbols global so that extension modules (numpy) resolve them; the handle stays open
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
  h.owned = true;
  h.init_thread = std::this_thread::get_id();

  // finalization hooks (see pyhost.h): MPI_Finalize, else exit()
  int mpi_up = 0, mpi_down = 0;
  MPI_Initialized(&mpi_up);
  MPI_Finalized(&mpi_down);
  if (mpi_up && !mpi_down && h.mpi_self_keyval == MPI_KEYVAL_INVALID) {
    if (MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, on_mpi_finalize, &h.mpi_self_keyval,
                               nullptr) != MPI_SUCCESS)
      h.mpi_self_keyval = MPI_KEYVAL_INVALID;
    else if (MPI_Comm_set_attr(MPI_COMM_SELF, h.mpi_self_keyval, nullptr) != MPI_SUCCESS)
      MPI_Comm_free_keyval(&h.mpi_self_keyval);    // resets it to MPI_KEYVAL_INVALID
  }
  if (h.mpi_self_keyval == MPI_KEYVAL_INVALID && mpi_up && !mpi_down)
    fprintf(stderr, "insitu: cannot hook into MPI_Finalize; Python will be finalized at "
                    "exit, after MPI\n");
  std::atexit(finalize_at_exit);

  PyOutcome out = configure_fresh_interpreter();
  h.main_tstate = PyEval_SaveThread();
  return out;
}

// Start/join the interpreter and import the bridge.  Without the GIL in and out.
PyOutcome ensure_interpreter()
{
  PyOutcome out = start_interpreter();
  if (!out.ok) return out;

  HostState &h = host();
  GilGuard gil;
  if (h.bridge_create) return out;
  PyRef mod = PyRef::steal(PyImport_ImportModule(BRIDGE_MODULE));
  PyRef create = mod ? PyRef::steal(PyObject_GetAttrString(mod.get(), "create")) : PyRef();
  if (create) {
    h.bridge_create = std::move(create);
    return out;
  }
  std::string tb = take_python_error();
  PyObject *exe = PySys_GetObject("executable");    // borrowed
  std::string where = exe ? text_of(exe, "?") : "?";
  return failure(fmt::format("cannot import {} in the embedded Python ({}); install glasscam "
                             "into that environment or set GLASSCAM_PYTHON",
                             BRIDGE_MODULE, where),
                 tb);
}

}    // namespace

/* ---------------------------------------------------------------------- */

struct PyHook::State {
  PyRef hook;    // glasscam.insitu._bridge.Hook
};

PyHook::PyHook() : state(new State) {}

PyHook::~PyHook()
{
  if (!state->hook) return;
  if (Py_IsInitialized()) {
    GilGuard gil;
    state->hook.reset();
  } else {
    state->hook.abandon();    // its interpreter is gone, and the object with it
  }
}

bool PyHook::valid() const
{
  return static_cast<bool>(state->hook);
}

PyOutcome PyHook::create(LAMMPS *lmp, const std::string &spec, const KeyValues &kw)
{
  PyOutcome out = ensure_interpreter();
  if (!out.ok) return out;

  GilGuard gil;    // before the PyRefs below: released after they are
  PyRef capsule = PyRef::steal(PyCapsule_New((void *) lmp, nullptr, nullptr));
  if (!capsule) return python_failure("cannot wrap the LAMMPS instance in a PyCapsule");
  PyRef address = PyRef::steal(PyLong_FromUnsignedLongLong((unsigned long long) (uintptr_t) lmp));
  if (!address) return python_failure("cannot convert the LAMMPS instance address");
  PyRef pyspec = decode_arg(spec);
  if (!pyspec)
    return python_failure(fmt::format("'{}' is not valid UTF-8", escape_bytes(spec)));
  PyRef kwargs = PyRef::steal(PyDict_New());
  if (!kwargs) return python_failure("cannot create the keyword dictionary");
  for (const auto &item : kw) {
    PyRef key = decode_arg(item.first);
    if (!key)
      return python_failure(
          fmt::format("keyword '{}' is not valid UTF-8", escape_bytes(item.first)));
    PyRef value = decode_arg(item.second);
    if (!value)
      return python_failure(fmt::format("value '{}' of keyword '{}' is not valid UTF-8",
                                        escape_bytes(item.second), item.first));
    if (PyDict_SetItem(kwargs.get(), key.get(), value.get()) < 0)
      return python_failure(fmt::format("cannot store keyword '{}'", item.first));
  }

  PyRef result = PyRef::steal(PyObject_CallFunctionObjArgs(
      host().bridge_create.get(), capsule.get(), address.get(), pyspec.get(), kwargs.get(),
      nullptr));
  if (!result) return python_failure("insitu bridge failed");
  if (!PyTuple_Check(result.get()) || PyTuple_GET_SIZE(result.get()) != 2)
    return outcome_from(result.get());    // reports the unexpected value
  PyObject *hook = PyTuple_GET_ITEM(result.get(), 0);    // borrowed
  if (hook == Py_None) {
    out = outcome_from(PyTuple_GET_ITEM(result.get(), 1));
    if (out.ok) out = failure(fmt::format("{}.create returned no hook", BRIDGE_MODULE), "");
    return out;
  }
  state->hook = PyRef::borrow(hook);
  return out;
}

PyOutcome PyHook::call(long long step)
{
  if (!state->hook) return failure("insitu hook is not initialized", "");
  GilGuard gil;
  PyRef pystep = PyRef::steal(PyLong_FromLongLong(step));
  if (!pystep) return python_failure("cannot convert the timestep");
  PyRef result = PyRef::steal(PyObject_CallOneArg(state->hook.get(), pystep.get()));
  if (!result) return python_failure("insitu bridge failed");
  return outcome_from(result.get());
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
