// metagenrl_mujoco: a thin C layer between .NET and MuJoCo 2.2.2.
//
// Why a shim instead of mirroring mjModel/mjData in C#: the structs are large and their pointer fields move
// between MuJoCo versions; compiled against the installed headers, these accessors are right by construction.
//
// Why error handling lives here: MuJoCo's default mju_error handler prints and exits the process. We install a
// handler that longjmps back to the shim entry point that is running on this thread, so the caller gets an
// error code and the message instead of a dead process. Every entry point that can reach mju_error is guarded.
#include <mujoco/mujoco.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MGR_MSG 1024

static _Thread_local jmp_buf* tl_guard;     // innermost active guard on this thread, or NULL
static _Thread_local char tl_error[MGR_MSG]; // last mju_error message on this thread
static _Thread_local char tl_warning[MGR_MSG];

static void on_error(const char* msg) {
  snprintf(tl_error, MGR_MSG, "%s", msg);
  if (tl_guard) longjmp(*tl_guard, 1);
  // No guard: MuJoCo must not continue after an error, and there is nobody to report to.
  fprintf(stderr, "MuJoCo error outside a guarded call: %s\n", msg);
  abort();
}

// MuJoCo's default warning handler appends to MUJOCO_LOG.TXT in the working directory; keep the text instead.
// Numerical blow-ups are reported to .NET through the warning counters (see mgr_step_n).
static void on_warning(const char* msg) { snprintf(tl_warning, MGR_MSG, "%s", msg); }

static void install_handlers(void) {
  // Plain pointer stores of the same values: harmless if two threads race here.
  mju_user_error = on_error;
  mju_user_warning = on_warning;
}

// Runs STMT under a guard; on mju_error evaluates to -1 with the message in tl_error. The jmp_buf lives in the
// caller's frame, and the previous guard is restored so guarded calls may nest.
#define GUARDED(STMT)                                  \
  do {                                                 \
    install_handlers();                                \
    jmp_buf jb_;                                       \
    jmp_buf* volatile prev_ = tl_guard;                \
    if (setjmp(jb_)) { tl_guard = prev_; return -1; }  \
    tl_guard = &jb_;                                   \
    STMT;                                              \
    tl_guard = prev_;                                  \
  } while (0)

const char* mgr_last_error(void) { return tl_error; }
const char* mgr_last_warning(void) { return tl_warning; }

// ── MODEL ──
// Returns 0 and *out on success; -1 with err filled on a parse/compile failure or a MuJoCo error.
int mgr_load_xml(const char* path, mjModel** out, char* err, int errsz) {
  *out = NULL;
  err[0] = 0;
  tl_error[0] = 0;
  GUARDED(*out = mj_loadXML(path, NULL, err, errsz));
  return *out ? 0 : -1;
}

void mgr_delete_model(mjModel* m) { mj_deleteModel(m); }

int mgr_nq(const mjModel* m) { return m->nq; }
int mgr_nv(const mjModel* m) { return m->nv; }
int mgr_nu(const mjModel* m) { return m->nu; }
int mgr_nbody(const mjModel* m) { return m->nbody; }
int mgr_nsite(const mjModel* m) { return m->nsite; }
double mgr_timestep(const mjModel* m) { return m->opt.timestep; }
const double* mgr_qpos0(const mjModel* m) { return m->qpos0; }
const double* mgr_body_mass(const mjModel* m) { return m->body_mass; }
const double* mgr_actuator_ctrlrange(const mjModel* m) { return m->actuator_ctrlrange; }
const mjtByte* mgr_actuator_ctrllimited(const mjModel* m) { return m->actuator_ctrllimited; }
int mgr_body_id(const mjModel* m, const char* name) { return mj_name2id(m, mjOBJ_BODY, name); }
int mgr_site_id(const mjModel* m, const char* name) { return mj_name2id(m, mjOBJ_SITE, name); }

// ── DATA ──
// All mjData arrays are carved out of one buffer at make time, so these pointers stay valid until delete.
int mgr_make_data(const mjModel* m, mjData** out) {
  *out = NULL;
  tl_error[0] = 0;
  GUARDED(*out = mj_makeData(m));
  return *out ? 0 : -1;
}
void mgr_delete_data(mjData* d) { mj_deleteData(d); }

double* mgr_qpos(mjData* d) { return d->qpos; }
double* mgr_qvel(mjData* d) { return d->qvel; }
double* mgr_ctrl(mjData* d) { return d->ctrl; }
double* mgr_xpos(mjData* d) { return d->xpos; }
double* mgr_site_xpos(mjData* d) { return d->site_xpos; }
double* mgr_qfrc_constraint(mjData* d) { return d->qfrc_constraint; }
double* mgr_cfrc_ext(mjData* d) { return d->cfrc_ext; }
double* mgr_time(mjData* d) { return &d->time; }

// The counters MuJoCo raises when it finds NaN/Inf/huge values (it then resets the state and carries on).
// After its auto-reset a counter restarts at 1 instead of counting on, so callers clear them before stepping.
static const int BAD_STATE[] = {mjWARN_BADQPOS, mjWARN_BADQVEL, mjWARN_BADQACC, mjWARN_BADCTRL};
#define N_BAD_STATE ((int)(sizeof BAD_STATE / sizeof BAD_STATE[0]))

static int bad_state_count(const mjData* d) {
  int n = 0;
  for (int i = 0; i < N_BAD_STATE; i++) n += d->warning[BAD_STATE[i]].number;
  return n;
}

static void clear_bad_state(mjData* d) {
  for (int i = 0; i < N_BAD_STATE; i++) d->warning[BAD_STATE[i]].number = 0;
}

static int all_finite(const double* x, int n) {
  for (int i = 0; i < n; i++)
    if (!isfinite(x[i])) return 0;
  return 1;
}

// ── SIMULATION ──
int mgr_reset(const mjModel* m, mjData* d) {
  tl_error[0] = 0;
  GUARDED(mj_resetData(m, d));
  return 0;
}

int mgr_forward(const mjModel* m, mjData* d) {
  tl_error[0] = 0;
  GUARDED(mj_forward(m, d));
  return 0;
}

// n calls of mj_step. Returns -1 on a MuJoCo error (message in mgr_last_error; the data must be reset before
// further use), otherwise the number of bad-state warnings raised during the n steps, plus one if qpos/qvel
// ended non-finite: 0 means the physics stayed healthy.
int mgr_step_n(const mjModel* m, mjData* d, int n) {
  tl_error[0] = 0;
  tl_warning[0] = 0;
  clear_bad_state(d);
  // Stop at the first blow-up: MuJoCo has already reset the state, so further steps would only hide it.
  GUARDED(for (int i = 0; i < n && !bad_state_count(d); i++) mj_step(m, d));
  int bad = bad_state_count(d);
  if (!all_finite(d->qpos, m->nq) || !all_finite(d->qvel, m->nv)) bad++;
  return bad;
}
