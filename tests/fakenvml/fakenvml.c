/*
 * fakenvml.c: a fake NVML (libnvidia-ml.so.1) for sdsuite's test suite.
 *
 * The real nvidia-ml-py (pynvml) loads it unchanged. Types, enum values, struct layouts and return codes
 * are declared here by hand after nvml.h (NVML API 13, as published in NVIDIA/go-nvml gen/nvml/nvml.h);
 * nothing from NVIDIA is included.
 *
 * Behaviour (see tests/fakenvml/__init__.py for the controller):
 *   - GPUs, driver, permissions, load, counter period, ... come from a key=value file named by
 *     $FAKENVML_CONFIG, re-read at every nvmlInit.
 *   - What the "GPU" is left with (locked clocks, application clocks, power limit, API restriction,
 *     persistence, load, power history) lives in a state file shared by every process (flock + atomic
 *     rename), so it survives a process killed with SIGKILL.
 *   - Every Set and Reset call appends a line to the setter log.
 *   - Power is piecewise constant between changes; energy is its exact integral over CLOCK_MONOTONIC; the
 *     energy counter publishes only at ticks every counter_period_ms (fixed phase).
 *
 * Build: tests/fakenvml/build.py (cc -shared -fPIC -Wl,-soname,libnvidia-ml.so.1); -DFAKENVML_R470 leaves
 * out the symbols an R470 driver does not have.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* ---------------------------------------------------------------------------------------------- */
/* Types and constants, after nvml.h (NVML API version 13)                                        */
/* ---------------------------------------------------------------------------------------------- */

typedef enum nvmlReturn_enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_ALREADY_INITIALIZED = 5,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_INSUFFICIENT_POWER = 8,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_IRQ_ISSUE = 11,
    NVML_ERROR_LIBRARY_NOT_FOUND = 12,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_CORRUPTED_INFOROM = 14,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_RESET_REQUIRED = 16,
    NVML_ERROR_OPERATING_SYSTEM = 17,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
    NVML_ERROR_IN_USE = 19,
    NVML_ERROR_MEMORY = 20,
    NVML_ERROR_NO_DATA = 21,
    NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22,
    NVML_ERROR_INSUFFICIENT_RESOURCES = 23,
    NVML_ERROR_FREQ_NOT_SUPPORTED = 24,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_DEPRECATED = 26,
    NVML_ERROR_NOT_READY = 27,
    NVML_ERROR_GPU_NOT_FOUND = 28,
    NVML_ERROR_INVALID_STATE = 29,
    NVML_ERROR_RESET_TYPE_NOT_SUPPORTED = 30,
    NVML_ERROR_UNKNOWN = 999
} nvmlReturn_t;

typedef struct nvmlDevice_st {
    int index; /* physical GPU index */
    int mig;   /* -1: the physical GPU; else the MIG device's index under it */
} *nvmlDevice_t;

typedef enum nvmlEnableState_enum { NVML_FEATURE_DISABLED = 0, NVML_FEATURE_ENABLED = 1 } nvmlEnableState_t;

typedef enum nvmlClockType_enum {
    NVML_CLOCK_GRAPHICS = 0,
    NVML_CLOCK_SM = 1,
    NVML_CLOCK_MEM = 2,
    NVML_CLOCK_VIDEO = 3,
    NVML_CLOCK_COUNT
} nvmlClockType_t;

typedef enum nvmlTemperatureSensors_enum { NVML_TEMPERATURE_GPU = 0, NVML_TEMPERATURE_COUNT } nvmlTemperatureSensors_t;

typedef enum nvmlRestrictedAPI_enum {
    NVML_RESTRICTED_API_SET_APPLICATION_CLOCKS = 0,
    NVML_RESTRICTED_API_SET_AUTO_BOOSTED_CLOCKS = 1,
    NVML_RESTRICTED_API_COUNT
} nvmlRestrictedAPI_t;

typedef enum nvmlComputeMode_enum {
    NVML_COMPUTEMODE_DEFAULT = 0,
    NVML_COMPUTEMODE_EXCLUSIVE_THREAD = 1,
    NVML_COMPUTEMODE_PROHIBITED = 2,
    NVML_COMPUTEMODE_EXCLUSIVE_PROCESS = 3,
    NVML_COMPUTEMODE_COUNT
} nvmlComputeMode_t;

typedef enum nvmlValueType_enum {
    NVML_VALUE_TYPE_DOUBLE = 0,
    NVML_VALUE_TYPE_UNSIGNED_INT = 1,
    NVML_VALUE_TYPE_UNSIGNED_LONG = 2,
    NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3,
    NVML_VALUE_TYPE_SIGNED_LONG_LONG = 4,
    NVML_VALUE_TYPE_SIGNED_INT = 5,
    NVML_VALUE_TYPE_UNSIGNED_SHORT = 6,
    NVML_VALUE_TYPE_COUNT
} nvmlValueType_t;

typedef union nvmlValue_st {
    double dVal;
    int siVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    signed long long sllVal;
    unsigned short usVal;
} nvmlValue_t;

typedef struct nvmlFieldValue_st {
    unsigned int fieldId;
    unsigned int scopeId;
    long long timestamp;   /* CPU timestamp of this value in microseconds since 1970 */
    long long latencyUsec;
    nvmlValueType_t valueType;
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;

typedef struct nvmlMemory_st {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct nvmlMemory_v2_st {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;

#define NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE 32
#define NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE 16
typedef struct nvmlPciInfo_st {
    char busIdLegacy[NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
} nvmlPciInfo_t;

typedef struct nvmlUtilization_st {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct {
    unsigned int version;
    nvmlTemperatureSensors_t sensorType;
    int temperature;
} nvmlTemperature_v1_t;
typedef nvmlTemperature_v1_t nvmlTemperature_t;

typedef struct {
    unsigned int isC2cEnabled;
} nvmlC2cModeInfo_v1_t;

typedef unsigned int nvmlDeviceArchitecture_t;

#define NVML_STRUCT_VERSION(data, ver) (unsigned int)(sizeof(nvml##data##_v##ver##_t) | (ver << 24U))
#define nvmlMemory_v2 NVML_STRUCT_VERSION(Memory, 2)
#define nvmlTemperature_v1 NVML_STRUCT_VERSION(Temperature, 1)

#define NVML_DEVICE_MIG_DISABLE 0x0
#define NVML_DEVICE_MIG_ENABLE 0x1

#define NVML_CLOCK_LIMIT_ID_RANGE_START 0xffffff00u
#define NVML_CLOCK_LIMIT_ID_TDP 0xffffff01u
#define NVML_CLOCK_LIMIT_ID_UNLIMITED 0xffffff02u

#define nvmlClocksEventReasonGpuIdle 0x0000000000000001ULL
#define nvmlClocksEventReasonApplicationsClocksSetting 0x0000000000000002ULL
#define nvmlClocksEventReasonSwPowerCap 0x0000000000000004ULL
#define nvmlClocksThrottleReasonHwSlowdown 0x0000000000000008ULL
#define nvmlClocksEventReasonSyncBoost 0x0000000000000010ULL
#define nvmlClocksEventReasonSwThermalSlowdown 0x0000000000000020ULL
#define nvmlClocksThrottleReasonHwThermalSlowdown 0x0000000000000040ULL
#define nvmlClocksThrottleReasonHwPowerBrakeSlowdown 0x0000000000000080ULL
#define nvmlClocksEventReasonDisplayClockSetting 0x0000000000000100ULL
#define FK_SUPPORTED_REASONS 0x00000000000001FFULL

#define NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION 83
#define NVML_FI_DEV_POWER_AVERAGE 185
#define NVML_FI_DEV_POWER_INSTANT 186
#define NVML_FI_DEV_POWER_MIN_LIMIT 187
#define NVML_FI_DEV_POWER_MAX_LIMIT 188
#define NVML_FI_DEV_POWER_DEFAULT_LIMIT 189
#define NVML_FI_DEV_POWER_CURRENT_LIMIT 190
#define NVML_FI_DEV_ENERGY 191
#define NVML_FI_DEV_POWER_REQUESTED_LIMIT 192
#define NVML_FI_MAX 303
#define NVML_POWER_SCOPE_GPU 0U

#define NVML_DEVICE_ARCH_VOLTA 5

/* ---------------------------------------------------------------------------------------------- */
/* Profiles (the generated header holds the clock tables from sdsuite/assets/supported_clocks.json) */
/* ---------------------------------------------------------------------------------------------- */

struct fk_memtab {
    unsigned mem_mhz;
    unsigned n;
    const unsigned *gfx; /* descending */
};

struct fk_profile {
    const char *key, *name, *driver;
    int cc_major, cc_minor;
    unsigned arch;
    unsigned long long mem_bytes;
    double idle_w, max_w;
    unsigned limit_default_mw, limit_min_mw, limit_max_mw;
    int power_avg_ms;    /* default averaging window of nvmlDeviceGetPowerUsage (0: instantaneous) */
    int mem_lock;        /* nvmlDeviceSetMemoryLockedClocks supported (Ampere and newer) */
    int mig_capable;     /* MIG (A100, H100, H200) */
    int average_field;   /* NVML_FI_DEV_POWER_AVERAGE supported */
    unsigned pci_device_id, video_mhz;
    unsigned nmem;
    const struct fk_memtab *mem; /* descending memory clock */
};

#include "fakenvml_profiles.h"

#define MAX_GPUS 8
#define MIG_PER_GPU 2
#define MIG_MAX_DEVICES 7
#define HIST_MAX 128
#define HIST_HORIZON_NS (120LL * 1000000000LL)
#define COUNTER_OFFSET_MJ 987654321000.0 /* "since driver load": never near zero */
#define COUNTER_OFFSET_STEP_MJ 1000000000.0

#ifdef FAKENVML_R470
#define FK_VARIANT "r470"
#else
#define FK_VARIANT "r535"
#endif

/* ---------------------------------------------------------------------------------------------- */
/* Configuration                                                                                  */
/* ---------------------------------------------------------------------------------------------- */

struct fail_rule {
    char func[96];
    nvmlReturn_t code;
    long after; /* first failing call (1-based) */
    long count; /* how many calls fail (-1: forever) */
    long seen;  /* calls of func so far */
};

struct gpu_cfg {
    int profile;
    double load;
    int counter_period_ms;
    int power_avg_ms;
    int mig;
    int persistence;
};

struct config {
    int loaded;
    int ngpus;
    struct gpu_cfg gpu[MAX_GPUS];
    char driver[80];
    int root;
    int app_clocks_restricted;
    char state_path[PATH_MAX];
    char lock_path[PATH_MAX + 8];
    char log_path[PATH_MAX];
    char fail_spec[2048];
    int nrules;
    struct fail_rule rules[32];
};

/* ---------------------------------------------------------------------------------------------- */
/* Persistent state                                                                               */
/* ---------------------------------------------------------------------------------------------- */

struct hist {
    long long t_ns; /* CLOCK_MONOTONIC */
    double p_mw;    /* true power from t_ns on */
    double e_mj;    /* true energy at t_ns (without the counter offset) */
};

struct gpu_state {
    int valid;
    int profile;
    long long t0_ns; /* "driver load": the counter ticks at t0 + k * period */
    double offset_mj;
    unsigned locked_sm_min, locked_sm_max, locked_mem_min, locked_mem_max; /* 0: not locked */
    unsigned app_mem, app_gfx;                                             /* 0: default */
    unsigned power_limit_mw;
    int api_restricted; /* -1: as configured */
    int persistence;    /* -1: as configured */
    double load;
    int nhist;
    struct hist hist[HIST_MAX];
};

struct state {
    struct gpu_state gpu[MAX_GPUS];
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_refcount;
static struct config g_cfg;
static struct state g_st;
static struct nvmlDevice_st g_devs[MAX_GPUS];
static struct nvmlDevice_st g_migs[MAX_GPUS][MIG_PER_GPU];

static const char *ERROR_NAMES[][2] = {
    {"SUCCESS", "Success"},
    {"UNINITIALIZED", "Uninitialized"},
    {"INVALID_ARGUMENT", "Invalid Argument"},
    {"NOT_SUPPORTED", "Not Supported"},
    {"NO_PERMISSION", "Insufficient Permissions"},
    {"ALREADY_INITIALIZED", "Already Initialized"},
    {"NOT_FOUND", "Not Found"},
    {"INSUFFICIENT_SIZE", "Insufficient Size"},
    {"INSUFFICIENT_POWER", "Insufficient External Power"},
    {"DRIVER_NOT_LOADED", "Driver Not Loaded"},
    {"TIMEOUT", "Timeout"},
    {"IRQ_ISSUE", "Interrupt Request Issue"},
    {"LIBRARY_NOT_FOUND", "NVML Shared Library Not Found"},
    {"FUNCTION_NOT_FOUND", "Function Not Found"},
    {"CORRUPTED_INFOROM", "Corrupted infoROM"},
    {"GPU_IS_LOST", "GPU is lost"},
    {"RESET_REQUIRED", "GPU requires restart"},
    {"OPERATING_SYSTEM", "The operating system has blocked the request."},
    {"LIB_RM_VERSION_MISMATCH", "RM has detected an NVML/RM version mismatch."},
    {"IN_USE", "In use by another client"},
    {"MEMORY", "Insufficient Memory"},
    {"NO_DATA", "No data"},
    {"VGPU_ECC_NOT_SUPPORTED",
     "The requested vgpu operation is not available on target device, because ECC is enabled"},
    {"INSUFFICIENT_RESOURCES", "Ran out of critical resources, other than memory"},
    {"FREQ_NOT_SUPPORTED", "The requested frequency is not supported"},
    {"ARGUMENT_VERSION_MISMATCH", "The provided version is invalid/unsupported"},
    {"DEPRECATED", "The requested functionality has been deprecated"},
    {"NOT_READY", "The system is not ready for the request"},
    {"GPU_NOT_FOUND", "No GPUs were found"},
    {"INVALID_STATE", "Resource not in correct state to perform requested operation"},
    {"RESET_TYPE_NOT_SUPPORTED", "Reset not supported for given device/parameters"},
};
#define N_ERROR_NAMES ((int)(sizeof(ERROR_NAMES) / sizeof(ERROR_NAMES[0])))

/* ---------------------------------------------------------------------------------------------- */
/* Small helpers                                                                                  */
/* ---------------------------------------------------------------------------------------------- */

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long realtime_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static void warn(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "fakenvml: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
}

static char *trim(char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

static int profile_index(const char *key) {
    for (int i = 0; i < FK_NPROFILES; i++)
        if (strcasecmp(FK_PROFILES[i].key, key) == 0) return i;
    return -1;
}

static int parse_code(const char *s, nvmlReturn_t *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s && *end == 0) {
        *out = (nvmlReturn_t)v;
        return 0;
    }
    if (strncasecmp(s, "NVML_ERROR_", 11) == 0) s += 11;
    if (strcasecmp(s, "UNKNOWN") == 0) {
        *out = NVML_ERROR_UNKNOWN;
        return 0;
    }
    for (int i = 1; i < N_ERROR_NAMES; i++)
        if (strcasecmp(s, ERROR_NAMES[i][0]) == 0) {
            *out = (nvmlReturn_t)i;
            return 0;
        }
    return -1;
}

/* fail=FUNC:CODE[@AFTER][xCOUNT],... */
static int parse_fail(const char *spec, struct config *c) {
    char buf[sizeof c->fail_spec];
    snprintf(buf, sizeof buf, "%s", spec);
    c->nrules = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        tok = trim(tok);
        if (!*tok) continue;
        if (c->nrules >= (int)(sizeof c->rules / sizeof c->rules[0])) return -1;
        struct fail_rule *r = &c->rules[c->nrules];
        memset(r, 0, sizeof *r);
        r->after = 1;
        r->count = -1;
        char *colon = strchr(tok, ':');
        if (!colon || colon == tok || (size_t)(colon - tok) >= sizeof r->func) return -1;
        memcpy(r->func, tok, (size_t)(colon - tok));
        r->func[colon - tok] = 0;
        char *p = colon + 1, code[64];
        size_t n = 0;
        while (*p && *p != '@' && !((*p == 'x' || *p == 'X') && isdigit((unsigned char)p[1])) && n + 1 < sizeof code)
            code[n++] = *p++;
        code[n] = 0;
        if (parse_code(trim(code), &r->code) != 0) return -1;
        while (*p) {
            char kind = *p++;
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || v < 0) return -1;
            if (kind == '@' && v >= 1) r->after = v;
            else if ((kind == 'x' || kind == 'X')) r->count = v;
            else return -1;
            p = end;
        }
        c->nrules++;
    }
    return 0;
}

static int parse_indexed(const char *key, const char *base, int *index) {
    size_t n = strlen(base);
    if (strncmp(key, base, n) != 0) return 0;
    if (key[n] == 0) {
        *index = -1;
        return 1;
    }
    if (key[n] != '.' || !isdigit((unsigned char)key[n + 1])) return 0;
    char *end;
    long v = strtol(key + n + 1, &end, 10);
    if (*end || v < 0 || v >= MAX_GPUS) return -1;
    *index = (int)v;
    return 1;
}

/* Load the configuration from $FAKENVML_CONFIG (defaults when unset). 0: ok; -1: error (reported on stderr). */
static int load_config(struct config *c) {
    struct config n;
    memset(&n, 0, sizeof n);
    n.ngpus = 1;
    n.root = 1;
    n.app_clocks_restricted = 1;
    int gl_period = 100, gl_avg = -1, gl_mig = 0, gl_pers = 0;
    double gl_load = 1.0;
    int period[MAX_GPUS], avg[MAX_GPUS], mig[MAX_GPUS], pers[MAX_GPUS];
    double load[MAX_GPUS];
    for (int i = 0; i < MAX_GPUS; i++) {
        period[i] = avg[i] = mig[i] = pers[i] = INT_MIN;
        load[i] = NAN;
        n.gpu[i].profile = profile_index("a100");
    }
    const char *path = getenv("FAKENVML_CONFIG");
    char state[PATH_MAX] = "", logp[PATH_MAX] = "", fail[sizeof n.fail_spec] = "";
    if (path && *path) {
        FILE *f = fopen(path, "r");
        if (!f) {
            warn("cannot read FAKENVML_CONFIG=%s (%s)", path, strerror(errno));
            return -1;
        }
        char line[4096];
        while (fgets(line, sizeof line, f)) {
            char *hash = strchr(line, '#');
            if (hash) *hash = 0;
            char *s = trim(line);
            if (!*s) continue;
            char *eq = strchr(s, '=');
            if (!eq) {
                warn("config line without '=': %s%s", s, "");
                fclose(f);
                return -1;
            }
            *eq = 0;
            char *key = trim(s), *val = trim(eq + 1), *end;
            int idx, r;
            if (strcmp(key, "gpus") == 0) {
                n.ngpus = 0;
                char *save = NULL;
                for (char *t = strtok_r(val, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                    t = trim(t);
                    if (!*t) continue;
                    int p = profile_index(t);
                    if (p < 0 || n.ngpus >= MAX_GPUS) {
                        warn("gpus: unknown profile or too many GPUs: %s%s", t, "");
                        fclose(f);
                        return -1;
                    }
                    n.gpu[n.ngpus++].profile = p;
                }
            } else if (strcmp(key, "driver") == 0) {
                snprintf(n.driver, sizeof n.driver, "%s", val);
            } else if (strcmp(key, "root") == 0) {
                n.root = atoi(val) != 0;
            } else if (strcmp(key, "app_clocks_restricted") == 0) {
                n.app_clocks_restricted = atoi(val) != 0;
            } else if (strcmp(key, "state") == 0) {
                snprintf(state, sizeof state, "%s", val);
            } else if (strcmp(key, "log") == 0) {
                snprintf(logp, sizeof logp, "%s", val);
            } else if (strcmp(key, "fail") == 0) {
                snprintf(fail, sizeof fail, "%s", val);
            } else if ((r = parse_indexed(key, "counter_period_ms", &idx)) != 0) {
                long v = strtol(val, &end, 10);
                if (r < 0 || *end || v < 1) goto bad;
                if (idx < 0) gl_period = (int)v; else period[idx] = (int)v;
            } else if ((r = parse_indexed(key, "power_avg_ms", &idx)) != 0) {
                long v = strtol(val, &end, 10);
                if (r < 0 || *end || v < 0) goto bad;
                if (idx < 0) gl_avg = (int)v; else avg[idx] = (int)v;
            } else if ((r = parse_indexed(key, "load", &idx)) != 0) {
                double v = strtod(val, &end);
                if (r < 0 || *end || !(v >= 0.0 && v <= 1.0)) goto bad;
                if (idx < 0) gl_load = v; else load[idx] = v;
            } else if ((r = parse_indexed(key, "mig", &idx)) != 0) {
                if (r < 0) goto bad;
                if (idx < 0) gl_mig = atoi(val) != 0; else mig[idx] = atoi(val) != 0;
            } else if ((r = parse_indexed(key, "persistence", &idx)) != 0) {
                if (r < 0) goto bad;
                if (idx < 0) gl_pers = atoi(val) != 0; else pers[idx] = atoi(val) != 0;
            } else {
                warn("unknown config key %s (in %s)", key, path);
                fclose(f);
                return -1;
            }
            continue;
        bad:
            warn("bad config value %s=%s", key, val);
            fclose(f);
            return -1;
        }
        fclose(f);
    }
    for (int i = 0; i < MAX_GPUS; i++) {
        struct gpu_cfg *g = &n.gpu[i];
        g->counter_period_ms = period[i] != INT_MIN ? period[i] : gl_period;
        int a = avg[i] != INT_MIN ? avg[i] : gl_avg;
        g->power_avg_ms = a >= 0 ? a : FK_PROFILES[g->profile].power_avg_ms;
        g->load = !isnan(load[i]) ? load[i] : gl_load;
        g->mig = (mig[i] != INT_MIN ? mig[i] : gl_mig) && FK_PROFILES[g->profile].mig_capable;
        g->persistence = pers[i] != INT_MIN ? pers[i] : gl_pers;
    }
    if (!n.driver[0])
        snprintf(n.driver, sizeof n.driver, "%s", n.ngpus ? FK_PROFILES[n.gpu[0].profile].driver : "535.154.05");
    const char *tmp = getenv("TMPDIR");
    char base[PATH_MAX];
    if (path && *path) snprintf(base, sizeof base, "%s", path);
    else snprintf(base, sizeof base, "%s/fakenvml-default-%d", tmp && *tmp ? tmp : "/tmp", (int)getuid());
    if (state[0]) snprintf(n.state_path, sizeof n.state_path, "%s", state);
    else snprintf(n.state_path, sizeof n.state_path, "%.4000s.state", base);
    if (logp[0]) snprintf(n.log_path, sizeof n.log_path, "%s", logp);
    else snprintf(n.log_path, sizeof n.log_path, "%.4000s.log", base);
    snprintf(n.lock_path, sizeof n.lock_path, "%s.lock", n.state_path);
    /* Keep the call counters of the fault rules while the spec is unchanged. */
    if (c->loaded && strcmp(c->fail_spec, fail) == 0) {
        n.nrules = c->nrules;
        memcpy(n.rules, c->rules, sizeof n.rules);
    } else if (parse_fail(fail, &n) != 0) {
        warn("bad fail= spec: %s%s", fail, "");
        return -1;
    }
    snprintf(n.fail_spec, sizeof n.fail_spec, "%s", fail);
    n.loaded = 1;
    *c = n;
    return 0;
}

static int ensure_config(void) {
    return g_cfg.loaded ? 0 : load_config(&g_cfg);
}

/* The injected error for this call of ``func`` (NVML_SUCCESS: none). */
static nvmlReturn_t injected(const char *func) {
    nvmlReturn_t rc = NVML_SUCCESS;
    for (int i = 0; i < g_cfg.nrules; i++) {
        struct fail_rule *r = &g_cfg.rules[i];
        if (strcmp(r->func, func) != 0) continue;
        long k = ++r->seen;
        if (rc == NVML_SUCCESS && k >= r->after && (r->count < 0 || k < r->after + r->count)) rc = r->code;
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* Physics: operating point, power, energy                                                        */
/* ---------------------------------------------------------------------------------------------- */

static unsigned prof_fmax(const struct fk_profile *p) {
    unsigned m = 0;
    for (unsigned i = 0; i < p->nmem; i++)
        if (p->mem[i].gfx[0] > m) m = p->mem[i].gfx[0];
    return m;
}

static unsigned prof_memmax(const struct fk_profile *p) { return p->mem[0].mem_mhz; }

static const struct fk_memtab *memtab_for(const struct fk_profile *p, unsigned mem) {
    const struct fk_memtab *best = &p->mem[0];
    for (unsigned i = 0; i < p->nmem; i++) {
        if (p->mem[i].mem_mhz == mem) return &p->mem[i];
        if (abs((int)p->mem[i].mem_mhz - (int)mem) < abs((int)best->mem_mhz - (int)mem)) best = &p->mem[i];
    }
    return best;
}

static const struct fk_memtab *memtab_exact(const struct fk_profile *p, unsigned mem) {
    for (unsigned i = 0; i < p->nmem; i++)
        if (p->mem[i].mem_mhz == mem) return &p->mem[i];
    return NULL;
}

/* The highest table clock not above ``want`` (the lowest when all are above): how the driver snaps a
   locked range's upper bound. */
static unsigned snap_down(const unsigned *tab, unsigned n, unsigned want) {
    for (unsigned i = 0; i < n; i++)
        if (tab[i] <= want) return tab[i];
    return tab[n - 1];
}

static unsigned snap_mem(const struct fk_profile *p, unsigned want) {
    for (unsigned i = 0; i < p->nmem; i++)
        if (p->mem[i].mem_mhz <= want) return p->mem[i].mem_mhz;
    return p->mem[p->nmem - 1].mem_mhz;
}

static double model_mw(const struct fk_profile *p, double f, double mem, double load) {
    double x = f / prof_fmax(p);
    double v = FK_V_MIN_RATIO + (1 - FK_V_MIN_RATIO) * x;
    double dynamic = (1 - FK_MEM_SHARE) * x * v * v + FK_MEM_SHARE * mem / prof_memmax(p);
    double stat = p->idle_w * (0.85 + 0.15 * x);
    if (load < 0) load = 0;
    if (load > 1) load = 1;
    return 1000.0 * (stat + load * (p->max_w - p->idle_w) * dynamic);
}

struct oppoint {
    unsigned sm, mem;
    double p_mw;
    unsigned long long reasons;
};

static void op_point(const struct gpu_state *g, struct oppoint *o) {
    const struct fk_profile *p = &FK_PROFILES[g->profile];
    unsigned mem = prof_memmax(p);
    if (g->locked_mem_max) mem = snap_mem(p, g->locked_mem_max);
    else if (g->app_mem) mem = g->app_mem;
    const struct fk_memtab *t = memtab_for(p, mem);
    mem = t->mem_mhz;
    unsigned f;
    int held = 0;
    if (g->locked_sm_max) {
        f = snap_down(t->gfx, t->n, g->locked_sm_max);
        held = 1;
    } else if (g->app_gfx) {
        f = snap_down(t->gfx, t->n, g->app_gfx);
        held = 1;
    } else if (g->load > 0) {
        f = t->gfx[0];
    } else {
        f = t->gfx[t->n - 1]; /* an idle GPU drops to its lowest clock */
    }
    unsigned long long reasons = 0;
    if (g->load <= 0) reasons |= nvmlClocksEventReasonGpuIdle;
    if (held && f < prof_fmax(p)) reasons |= nvmlClocksEventReasonApplicationsClocksSetting;
    double pw = model_mw(p, f, mem, g->load);
    if (pw > (double)g->power_limit_mw) {
        reasons |= nvmlClocksEventReasonSwPowerCap;
        unsigned i = 0;
        while (i < t->n && t->gfx[i] > f) i++;
        for (; i < t->n; i++) {
            f = t->gfx[i];
            pw = model_mw(p, f, mem, g->load);
            if (pw <= (double)g->power_limit_mw) break;
        }
    }
    o->sm = f;
    o->mem = mem;
    o->p_mw = pw;
    o->reasons = reasons;
}

static double energy_at(const struct gpu_state *g, long long t) {
    int i = g->nhist - 1;
    while (i > 0 && g->hist[i].t_ns > t) i--;
    return g->hist[i].e_mj + g->hist[i].p_mw * (double)(t - g->hist[i].t_ns) / 1e9;
}

static double power_now(const struct gpu_state *g) { return g->hist[g->nhist - 1].p_mw; }

static double power_avg(const struct gpu_state *g, long long now, int window_ms) {
    if (window_ms <= 0) return power_now(g);
    long long w = (long long)window_ms * 1000000LL;
    return (energy_at(g, now) - energy_at(g, now - w)) * 1e9 / (double)w;
}

static unsigned long long counter_mj(const struct gpu_state *g, const struct gpu_cfg *c, long long now) {
    long long period = (long long)c->counter_period_ms * 1000000LL;
    long long k = (now - g->t0_ns) / period;
    long long tick = g->t0_ns + k * period;
    double e = energy_at(g, tick);
    return (unsigned long long)floor(g->offset_mj + e);
}

static void fresh_gpu(struct gpu_state *g, int index, int profile, long long now) {
    memset(g, 0, sizeof *g);
    g->valid = 1;
    g->profile = profile;
    g->t0_ns = now;
    g->offset_mj = COUNTER_OFFSET_MJ + COUNTER_OFFSET_STEP_MJ * index;
    g->power_limit_mw = FK_PROFILES[profile].limit_default_mw;
    g->api_restricted = -1;
    g->persistence = -1;
    g->load = g_cfg.gpu[index].load;
    struct oppoint o;
    op_point(g, &o);
    g->nhist = 1;
    g->hist[0].t_ns = now;
    g->hist[0].p_mw = o.p_mw;
    g->hist[0].e_mj = 0.0;
}

/* The settings changed at ``now``: integrate up to now and start a new constant-power segment. */
static void record_change(struct gpu_state *g, long long now) {
    struct oppoint o;
    op_point(g, &o);
    struct hist *last = &g->hist[g->nhist - 1];
    if (o.p_mw == last->p_mw) return;
    if (now <= last->t_ns) {
        last->p_mw = o.p_mw;
        return;
    }
    double e = energy_at(g, now);
    while (g->nhist > 1 && (g->nhist >= HIST_MAX || g->hist[1].t_ns <= now - HIST_HORIZON_NS)) {
        memmove(&g->hist[0], &g->hist[1], sizeof(struct hist) * (size_t)(g->nhist - 1));
        g->nhist--;
    }
    g->hist[g->nhist].t_ns = now;
    g->hist[g->nhist].p_mw = o.p_mw;
    g->hist[g->nhist].e_mj = e;
    g->nhist++;
}

/* ---------------------------------------------------------------------------------------------- */
/* State file: text, one "gpu" line and its "hist" lines per GPU; flock on <state>.lock; atomic   */
/* rename.                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

static void state_parse(struct state *st, FILE *f) {
    memset(st, 0, sizeof *st);
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *save = NULL, *tok = strtok_r(line, " \t\n", &save);
        if (!tok) continue;
        if (strcmp(tok, "gpu") == 0) {
            tok = strtok_r(NULL, " \t\n", &save);
            if (!tok) continue;
            int i = atoi(tok);
            if (i < 0 || i >= MAX_GPUS) continue;
            struct gpu_state *g = &st->gpu[i];
            memset(g, 0, sizeof *g);
            g->profile = -1;
            g->api_restricted = g->persistence = -1;
            while ((tok = strtok_r(NULL, " \t\n", &save))) {
                char *eq = strchr(tok, '=');
                if (!eq) continue;
                *eq = 0;
                const char *k = tok, *v = eq + 1;
                if (!strcmp(k, "profile")) g->profile = profile_index(v);
                else if (!strcmp(k, "t0_ns")) g->t0_ns = atoll(v);
                else if (!strcmp(k, "offset_mj")) g->offset_mj = strtod(v, NULL);
                else if (!strcmp(k, "locked_sm")) sscanf(v, "%u,%u", &g->locked_sm_min, &g->locked_sm_max);
                else if (!strcmp(k, "locked_mem")) sscanf(v, "%u,%u", &g->locked_mem_min, &g->locked_mem_max);
                else if (!strcmp(k, "app")) sscanf(v, "%u,%u", &g->app_mem, &g->app_gfx);
                else if (!strcmp(k, "power_limit_mw")) g->power_limit_mw = (unsigned)strtoul(v, NULL, 10);
                else if (!strcmp(k, "api_restricted")) g->api_restricted = atoi(v);
                else if (!strcmp(k, "persistence")) g->persistence = atoi(v);
                else if (!strcmp(k, "load")) g->load = strtod(v, NULL);
            }
            g->valid = g->profile >= 0;
        } else if (strcmp(tok, "hist") == 0) {
            char *si = strtok_r(NULL, " \t\n", &save), *st_ = strtok_r(NULL, " \t\n", &save);
            char *sp = strtok_r(NULL, " \t\n", &save), *se = strtok_r(NULL, " \t\n", &save);
            if (!si || !st_ || !sp || !se) continue;
            int i = atoi(si);
            if (i < 0 || i >= MAX_GPUS || st->gpu[i].nhist >= HIST_MAX) continue;
            struct hist *h = &st->gpu[i].hist[st->gpu[i].nhist++];
            h->t_ns = atoll(st_);
            h->p_mw = strtod(sp, NULL);
            h->e_mj = strtod(se, NULL);
        }
    }
    for (int i = 0; i < MAX_GPUS; i++)
        if (st->gpu[i].valid && st->gpu[i].nhist == 0) st->gpu[i].valid = 0;
}

static int state_write(const struct state *st) {
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%.4000s.tmp.%d", g_cfg.state_path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    fprintf(f, "fakenvml-state 1\n");
    for (int i = 0; i < MAX_GPUS; i++) {
        const struct gpu_state *g = &st->gpu[i];
        if (!g->valid) continue;
        fprintf(f,
                "gpu %d profile=%s t0_ns=%lld offset_mj=%.17g locked_sm=%u,%u locked_mem=%u,%u app=%u,%u "
                "power_limit_mw=%u api_restricted=%d persistence=%d load=%.17g\n",
                i, FK_PROFILES[g->profile].key, g->t0_ns, g->offset_mj, g->locked_sm_min, g->locked_sm_max,
                g->locked_mem_min, g->locked_mem_max, g->app_mem, g->app_gfx, g->power_limit_mw, g->api_restricted,
                g->persistence, g->load);
        for (int k = 0; k < g->nhist; k++)
            fprintf(f, "hist %d %lld %.17g %.17g\n", i, g->hist[k].t_ns, g->hist[k].p_mw, g->hist[k].e_mj);
    }
    if (fclose(f) != 0) {
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, g_cfg.state_path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Lock, read and reconcile the state with the configuration (new or re-profiled GPUs start fresh; a
   state from before a reboot, where CLOCK_MONOTONIC restarted, is a driver reload). ``apply_load``: take
   the configured load (nvmlInit). Returns the lock fd (>= 0) or -1. */
static int state_begin(long long now, int apply_load, int *dirty) {
    int fd = open(g_cfg.lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) return -1;
    while (flock(fd, LOCK_EX) != 0)
        if (errno != EINTR) {
            close(fd);
            return -1;
        }
    FILE *f = fopen(g_cfg.state_path, "r");
    if (f) {
        state_parse(&g_st, f);
        fclose(f);
    } else {
        memset(&g_st, 0, sizeof g_st);
    }
    *dirty = 0;
    for (int i = 0; i < g_cfg.ngpus; i++) {
        struct gpu_state *g = &g_st.gpu[i];
        if (!g->valid || g->profile != g_cfg.gpu[i].profile || g->t0_ns > now || g->hist[g->nhist - 1].t_ns > now) {
            fresh_gpu(g, i, g_cfg.gpu[i].profile, now);
            *dirty = 1;
        } else if (apply_load && g->load != g_cfg.gpu[i].load) {
            g->load = g_cfg.gpu[i].load;
            record_change(g, now);
            *dirty = 1;
        }
    }
    return fd;
}

static int state_end(int fd, int write) {
    int rc = 0;
    if (write) rc = state_write(&g_st);
    flock(fd, LOCK_UN);
    close(fd);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* Handles                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

__attribute__((constructor)) static void fk_init_handles(void) {
    for (int i = 0; i < MAX_GPUS; i++) {
        g_devs[i].index = i;
        g_devs[i].mig = -1;
        for (int k = 0; k < MIG_PER_GPU; k++) {
            g_migs[i][k].index = i;
            g_migs[i][k].mig = k;
        }
    }
}

static nvmlReturn_t resolve(nvmlDevice_t h, int *idx, int *mig) {
    uintptr_t p = (uintptr_t)h;
    uintptr_t d0 = (uintptr_t)g_devs, d1 = d0 + sizeof g_devs;
    uintptr_t m0 = (uintptr_t)g_migs, m1 = m0 + sizeof g_migs;
    if (p >= d0 && p < d1 && (p - d0) % sizeof g_devs[0] == 0) {
        *idx = (int)((p - d0) / sizeof g_devs[0]);
        *mig = -1;
    } else if (p >= m0 && p < m1 && (p - m0) % sizeof g_migs[0][0] == 0) {
        size_t k = (p - m0) / sizeof g_migs[0][0];
        *idx = (int)(k / MIG_PER_GPU);
        *mig = (int)(k % MIG_PER_GPU);
    } else {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (*idx >= g_cfg.ngpus) return NVML_ERROR_INVALID_ARGUMENT;
    if (*mig >= 0 && !g_cfg.gpu[*idx].mig) return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

static unsigned long long fnv1a(const char *s, unsigned long long h) {
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static void make_uuid(char *out, size_t n, const char *prefix, int index, int mig, const char *profile) {
    char seed[96];
    snprintf(seed, sizeof seed, "fakenvml/%s/%d/%d", profile, index, mig);
    unsigned long long a = fnv1a(seed, 14695981039346656037ULL), b = fnv1a(seed, a ^ 0x9e3779b97f4a7c15ULL);
    snprintf(out, n, "%s-%08llx-%04llx-%04llx-%04llx-%012llx", prefix, a >> 32, (a >> 16) & 0xffff,
             0x4000 | (a & 0x0fff), 0x8000 | ((b >> 48) & 0x3fff), b & 0xffffffffffffULL);
}

static void device_uuid(char *out, size_t n, int idx, int mig) {
    make_uuid(out, n, mig < 0 ? "GPU" : "MIG", idx, mig, FK_PROFILES[g_cfg.gpu[idx].profile].key);
}

/* ---------------------------------------------------------------------------------------------- */
/* Call scaffolding                                                                               */
/* ---------------------------------------------------------------------------------------------- */

#define LOCK() pthread_mutex_lock(&g_mu)
#define UNLOCK() pthread_mutex_unlock(&g_mu)

/* Every NVML entry point: lock, check init, apply injected faults. */
#define ENTER(name)                                    \
    nvmlReturn_t rc = NVML_SUCCESS;                    \
    const char *fn_name = name;                        \
    (void)fn_name;                                     \
    LOCK();                                            \
    if (g_refcount <= 0) {                             \
        rc = NVML_ERROR_UNINITIALIZED;                 \
        goto out;                                      \
    }                                                  \
    if ((rc = injected(name)) != NVML_SUCCESS) goto out;

#define LEAVE  \
    out:       \
    UNLOCK();  \
    return rc;

#define CHECK(expr)                               \
    do {                                          \
        if ((rc = (expr)) != NVML_SUCCESS) goto out; \
    } while (0)

/* Resolve the handle to a physical GPU (MIG device: NOT_SUPPORTED). */
#define PHYS(h)                                     \
    int idx = -1, mig = -1;                         \
    CHECK(resolve((h), &idx, &mig));                \
    if (mig >= 0) {                                 \
        rc = NVML_ERROR_NOT_SUPPORTED;              \
        goto out;                                   \
    }                                               \
    const struct fk_profile *prof = &FK_PROFILES[g_cfg.gpu[idx].profile]; \
    (void)prof;

static void log_setter(const char *func, int gpu, const char *args, nvmlReturn_t rc) {
    if (!g_cfg.loaded || !g_cfg.log_path[0]) return;
    char line[512];
    int n = snprintf(line, sizeof line, "%lld pid=%d %s gpu=%d args=%s rc=%d\n", now_ns(), (int)getpid(), func, gpu,
                     args, (int)rc);
    int fd = open(g_cfg.log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (fd < 0) return;
    ssize_t w = write(fd, line, (size_t)n); /* one O_APPEND write: lines from several processes never interleave */
    (void)w;
    close(fd);
}

/* Read the state for a getter (no change). */
#define READ_STATE(g)                                       \
    long long now = now_ns();                               \
    int dirty_ = 0;                                         \
    int fd_ = state_begin(now, 0, &dirty_);                 \
    if (fd_ < 0) {                                          \
        rc = NVML_ERROR_UNKNOWN;                            \
        goto out;                                           \
    }                                                       \
    struct gpu_state *g = &g_st.gpu[idx];                   \
    (void)g;                                                \
    (void)now;
#define END_READ() state_end(fd_, dirty_)

static int is_root(void) { return g_cfg.root; }

static int app_clocks_restricted(const struct gpu_state *g) {
    return g->api_restricted >= 0 ? g->api_restricted : g_cfg.app_clocks_restricted;
}

/* A setter: ``change`` validates and applies the change to g (returns the NVML code); the change is
   persisted and logged. */
typedef nvmlReturn_t (*change_fn)(struct gpu_state *g, const struct fk_profile *p, const unsigned *a, int root);

static nvmlReturn_t run_setter(const char *name, nvmlDevice_t h, change_fn change, const unsigned *a, int nargs,
                               const char *argfmt) {
    char args[128] = "";
    if (nargs == 1) snprintf(args, sizeof args, argfmt, a[0]);
    else if (nargs == 2) snprintf(args, sizeof args, argfmt, a[0], a[1]);
    int gpu = -1;
    nvmlReturn_t rc = NVML_SUCCESS;
    LOCK();
    {
        int idx = -1, mig = -1;
        if (g_refcount <= 0) {
            rc = NVML_ERROR_UNINITIALIZED;
        } else if ((rc = injected(name)) != NVML_SUCCESS) {
            if (resolve(h, &idx, &mig) == NVML_SUCCESS) gpu = idx;
        } else if ((rc = resolve(h, &idx, &mig)) != NVML_SUCCESS) {
            /* unknown handle */
        } else {
            gpu = idx;
            if (mig >= 0) {
                rc = NVML_ERROR_NOT_SUPPORTED;
            } else {
                long long now = now_ns();
                int dirty = 0, fd = state_begin(now, 0, &dirty);
                if (fd < 0) {
                    rc = NVML_ERROR_UNKNOWN;
                } else {
                    struct gpu_state *g = &g_st.gpu[idx];
                    rc = change(g, &FK_PROFILES[g->profile], a, is_root());
                    if (rc == NVML_SUCCESS) {
                        record_change(g, now);
                        dirty = 1;
                    }
                    if (state_end(fd, dirty) != 0) rc = NVML_ERROR_UNKNOWN;
                }
            }
        }
    }
    log_setter(name, gpu, args, rc);
    UNLOCK();
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* Initialization and cleanup                                                                     */
/* ---------------------------------------------------------------------------------------------- */

static nvmlReturn_t do_init(const char *name, unsigned flags) {
    (void)flags;
    nvmlReturn_t rc = NVML_SUCCESS;
    LOCK();
    if (load_config(&g_cfg) != 0) {
        rc = NVML_ERROR_UNKNOWN;
        goto out;
    }
    if ((rc = injected(name)) != NVML_SUCCESS) goto out;
    {
        long long now = now_ns();
        int dirty = 0, fd = state_begin(now, 1, &dirty);
        if (fd < 0 || state_end(fd, dirty) != 0) {
            rc = NVML_ERROR_UNKNOWN;
            goto out;
        }
    }
    g_refcount++;
out:
    UNLOCK();
    return rc;
}

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { return do_init("nvmlInitWithFlags", flags); }
EXPORT nvmlReturn_t nvmlInit_v2(void) { return do_init("nvmlInit_v2", 0); }
EXPORT nvmlReturn_t nvmlInit(void) { return do_init("nvmlInit", 0); }

EXPORT nvmlReturn_t nvmlShutdown(void) {
    ENTER("nvmlShutdown");
    g_refcount--;
    LEAVE
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    if (result == NVML_ERROR_UNKNOWN) return "Unknown Error";
    if ((int)result >= 0 && (int)result < N_ERROR_NAMES) return ERROR_NAMES[result][1];
    return "Unknown Error";
}

/* ---------------------------------------------------------------------------------------------- */
/* System queries                                                                                 */
/* ---------------------------------------------------------------------------------------------- */

static int driver_major(void) { return atoi(g_cfg.driver); }

static int cuda_version(void) {
    int m = driver_major();
    return m >= 580 ? 13000 : m >= 570 ? 12080 : m >= 560 ? 12060 : m >= 550 ? 12040 : m >= 545 ? 12030
         : m >= 535 ? 12020 : m >= 530 ? 12010 : m >= 525 ? 12000 : m >= 520 ? 11080 : m >= 515 ? 11070
         : m >= 510 ? 11060 : m >= 495 ? 11050 : m >= 470 ? 11040 : m >= 465 ? 11030 : m >= 460 ? 11020
         : m >= 455 ? 11010 : m >= 450 ? 11000 : 10020;
}

static nvmlReturn_t copy_string(char *dst, unsigned int length, const char *src) {
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    ENTER("nvmlSystemGetDriverVersion");
    rc = copy_string(version, length, g_cfg.driver);
    LEAVE
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    ENTER("nvmlSystemGetNVMLVersion");
    char buf[96];
    snprintf(buf, sizeof buf, "%d.%s", cuda_version() / 1000, g_cfg.driver);
    rc = copy_string(version, length, buf);
    LEAVE
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion) {
    ENTER("nvmlSystemGetCudaDriverVersion");
    if (!cudaDriverVersion) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    *cudaDriverVersion = cuda_version();
    LEAVE
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion) {
    ENTER("nvmlSystemGetCudaDriverVersion_v2");
    if (!cudaDriverVersion) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    *cudaDriverVersion = cuda_version();
    LEAVE
}

/* ---------------------------------------------------------------------------------------------- */
/* Device enumeration and identity                                                                */
/* ---------------------------------------------------------------------------------------------- */

static nvmlReturn_t get_count(const char *name, unsigned int *deviceCount) {
    ENTER(name);
    if (!deviceCount) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    *deviceCount = (unsigned)g_cfg.ngpus;
    LEAVE
}
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
    return get_count("nvmlDeviceGetCount_v2", deviceCount);
}
EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount) {
    return get_count("nvmlDeviceGetCount", deviceCount);
}

static nvmlReturn_t get_handle(const char *name, unsigned int index, nvmlDevice_t *device) {
    ENTER(name);
    if (!device || index >= (unsigned)g_cfg.ngpus) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    *device = &g_devs[index];
    LEAVE
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    return get_handle("nvmlDeviceGetHandleByIndex_v2", index, device);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return get_handle("nvmlDeviceGetHandleByIndex", index, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    ENTER("nvmlDeviceGetHandleByUUID");
    if (!uuid || !device) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    for (int i = 0; i < g_cfg.ngpus; i++) {
        char u[96];
        device_uuid(u, sizeof u, i, -1);
        if (strcmp(u, uuid) == 0) {
            *device = &g_devs[i];
            goto out;
        }
        for (int k = 0; g_cfg.gpu[i].mig && k < MIG_PER_GPU; k++) {
            device_uuid(u, sizeof u, i, k);
            if (strcmp(u, uuid) == 0) {
                *device = &g_migs[i][k];
                goto out;
            }
        }
    }
    rc = NVML_ERROR_NOT_FOUND;
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    ENTER("nvmlDeviceGetIndex");
    PHYS(device);
    if (!index) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    *index = (unsigned)idx;
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    ENTER("nvmlDeviceGetName");
    int idx = -1, mig = -1;
    CHECK(resolve(device, &idx, &mig));
    const struct fk_profile *p = &FK_PROFILES[g_cfg.gpu[idx].profile];
    char buf[128];
    if (mig < 0) snprintf(buf, sizeof buf, "%s", p->name);
    else snprintf(buf, sizeof buf, "%s MIG 3g.%llugb", p->name, p->mem_bytes / 2 / 1000000000ULL);
    rc = copy_string(name, length, buf);
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    ENTER("nvmlDeviceGetUUID");
    int idx = -1, mig = -1;
    CHECK(resolve(device, &idx, &mig));
    char buf[96];
    device_uuid(buf, sizeof buf, idx, mig);
    rc = copy_string(uuid, length, buf);
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor) {
    ENTER("nvmlDeviceGetCudaComputeCapability");
    int idx = -1, mig = -1;
    CHECK(resolve(device, &idx, &mig));
    if (!major || !minor) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    *major = FK_PROFILES[g_cfg.gpu[idx].profile].cc_major;
    *minor = FK_PROFILES[g_cfg.gpu[idx].profile].cc_minor;
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, nvmlDeviceArchitecture_t *arch) {
    ENTER("nvmlDeviceGetArchitecture");
    int idx = -1, mig = -1;
    CHECK(resolve(device, &idx, &mig));
    if (!arch) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    *arch = FK_PROFILES[g_cfg.gpu[idx].profile].arch;
    LEAVE
}

static void memory_of(int idx, int mig, unsigned long long *total, unsigned long long *reserved,
                      unsigned long long *used) {
    const struct fk_profile *p = &FK_PROFILES[g_cfg.gpu[idx].profile];
    unsigned long long t = mig < 0 ? p->mem_bytes : p->mem_bytes / 2;
    *total = t;
    *reserved = (t / 200) & ~0xFFFFFULL; /* ~0.5% set aside by the driver, in whole MiB */
    *used = *reserved;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    ENTER("nvmlDeviceGetMemoryInfo");
    int idx = -1, mig = -1;
    CHECK(resolve(device, &idx, &mig));
    if (!memory) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    unsigned long long t, r, u;
    memory_of(idx, mig, &t, &r, &u);
    memory->total = t;
    memory->used = u; /* v1: "Sum of Reserved and Allocated" */
    memory->free = t - u;
    LEAVE
}

#ifndef FAKENVML_R470
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    ENTER("nvmlDeviceGetMemoryInfo_v2");
    int idx = -1, mig = -1;
    CHECK(resolve(device, &idx, &mig));
    if (!memory) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    if (memory->version != nvmlMemory_v2) CHECK(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    unsigned long long t, r, u;
    memory_of(idx, mig, &t, &r, &u);
    memory->total = t;
    memory->reserved = r;
    memory->used = 0;
    memory->free = t - r;
    LEAVE
}
#endif

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    ENTER("nvmlDeviceGetPciInfo_v3");
    PHYS(device);
    if (!pci) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    memset(pci, 0, sizeof *pci);
    pci->domain = 0;
    pci->bus = 0x17u + 0x10u * (unsigned)idx;
    pci->device = 0;
    pci->pciDeviceId = prof->pci_device_id;
    pci->pciSubSystemId = (prof->pci_device_id & 0xFFFF0000u) | 0x10DEu;
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0", pci->domain, pci->bus, pci->device);
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.0", pci->domain, pci->bus, pci->device);
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeMode(nvmlDevice_t device, nvmlComputeMode_t *mode) {
    ENTER("nvmlDeviceGetComputeMode");
    PHYS(device);
    if (!mode) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    *mode = NVML_COMPUTEMODE_DEFAULT;
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetPersistenceMode(nvmlDevice_t device, nvmlEnableState_t *mode) {
    ENTER("nvmlDeviceGetPersistenceMode");
    PHYS(device);
    if (!mode) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    READ_STATE(g);
    *mode = (g->persistence >= 0 ? g->persistence : g_cfg.gpu[idx].persistence) ? NVML_FEATURE_ENABLED
                                                                                  : NVML_FEATURE_DISABLED;
    END_READ();
    LEAVE
}

#ifndef FAKENVML_R470
EXPORT nvmlReturn_t nvmlDeviceGetC2cModeInfoV(nvmlDevice_t device, nvmlC2cModeInfo_v1_t *c2cModeInfo) {
    ENTER("nvmlDeviceGetC2cModeInfoV");
    PHYS(device);
    if (!c2cModeInfo) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    rc = NVML_ERROR_NOT_SUPPORTED; /* no profile is a Grace Hopper superchip */
    LEAVE
}
#endif

/* ---------------------------------------------------------------------------------------------- */
/* MIG                                                                                            */
/* ---------------------------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode, unsigned int *pendingMode) {
    ENTER("nvmlDeviceGetMigMode");
    PHYS(device);
    if (!currentMode || !pendingMode) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    if (!prof->mig_capable) CHECK(NVML_ERROR_NOT_SUPPORTED);
    *currentMode = *pendingMode = g_cfg.gpu[idx].mig ? NVML_DEVICE_MIG_ENABLE : NVML_DEVICE_MIG_DISABLE;
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
    ENTER("nvmlDeviceGetMaxMigDeviceCount");
    PHYS(device);
    if (!count) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    *count = g_cfg.gpu[idx].mig ? MIG_MAX_DEVICES : 0; /* "zero if MIG is not supported or enabled" */
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                        nvmlDevice_t *migDevice) {
    ENTER("nvmlDeviceGetMigDeviceHandleByIndex");
    int idx = -1, mig = -1;
    CHECK(resolve(device, &idx, &mig));
    if (mig >= 0 || !migDevice) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    if (!FK_PROFILES[g_cfg.gpu[idx].profile].mig_capable) CHECK(NVML_ERROR_NOT_SUPPORTED);
    if (!g_cfg.gpu[idx].mig) CHECK(NVML_ERROR_NOT_FOUND);
    if (index >= MIG_MAX_DEVICES) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    if (index >= MIG_PER_GPU) CHECK(NVML_ERROR_NOT_FOUND);
    *migDevice = &g_migs[idx][index];
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice) {
    ENTER("nvmlDeviceIsMigDeviceHandle");
    int idx = -1, mig = -1;
    CHECK(resolve(device, &idx, &mig));
    if (!isMigDevice) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    *isMigDevice = mig >= 0;
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice, nvmlDevice_t *device) {
    ENTER("nvmlDeviceGetDeviceHandleFromMigDeviceHandle");
    int idx = -1, mig = -1;
    CHECK(resolve(migDevice, &idx, &mig));
    if (mig < 0 || !device) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    *device = &g_devs[idx];
    LEAVE
}

/* ---------------------------------------------------------------------------------------------- */
/* Power limits                                                                                   */
/* ---------------------------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *limit) {
    ENTER("nvmlDeviceGetPowerManagementLimit");
    PHYS(device);
    if (!limit) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    READ_STATE(g);
    *limit = g->power_limit_mw;
    END_READ();
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
    ENTER("nvmlDeviceGetEnforcedPowerLimit");
    PHYS(device);
    if (!limit) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    READ_STATE(g);
    *limit = g->power_limit_mw;
    END_READ();
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t device, unsigned int *defaultLimit) {
    ENTER("nvmlDeviceGetPowerManagementDefaultLimit");
    PHYS(device);
    if (!defaultLimit) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    *defaultLimit = prof->limit_default_mw;
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t device, unsigned int *minLimit,
                                                                 unsigned int *maxLimit) {
    ENTER("nvmlDeviceGetPowerManagementLimitConstraints");
    PHYS(device);
    if (!minLimit || !maxLimit) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    *minLimit = prof->limit_min_mw;
    *maxLimit = prof->limit_max_mw;
    LEAVE
}

static nvmlReturn_t ch_power_limit(struct gpu_state *g, const struct fk_profile *p, const unsigned *a, int root) {
    if (!root) return NVML_ERROR_NO_PERMISSION;
    if (a[0] < p->limit_min_mw || a[0] > p->limit_max_mw) return NVML_ERROR_INVALID_ARGUMENT;
    g->power_limit_mw = a[0];
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceSetPowerManagementLimit(nvmlDevice_t device, unsigned int limit) {
    unsigned a[1] = {limit};
    return run_setter("nvmlDeviceSetPowerManagementLimit", device, ch_power_limit, a, 1, "%u");
}

/* ---------------------------------------------------------------------------------------------- */
/* Clocks                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

static nvmlReturn_t fill_clocks(unsigned int *count, unsigned int *clocksMHz, const unsigned *src, unsigned n) {
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    if (*count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    if (!clocksMHz && n) return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned i = 0; i < n; i++) clocksMHz[i] = src[i];
    *count = n;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedMemoryClocks(nvmlDevice_t device, unsigned int *count,
                                                       unsigned int *clocksMHz) {
    ENTER("nvmlDeviceGetSupportedMemoryClocks");
    PHYS(device);
    unsigned mems[16];
    for (unsigned i = 0; i < prof->nmem && i < 16; i++) mems[i] = prof->mem[i].mem_mhz;
    rc = fill_clocks(count, clocksMHz, mems, prof->nmem);
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedGraphicsClocks(nvmlDevice_t device, unsigned int memoryClockMHz,
                                                         unsigned int *count, unsigned int *clocksMHz) {
    ENTER("nvmlDeviceGetSupportedGraphicsClocks");
    PHYS(device);
    if (!count) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    const struct fk_memtab *t = memtab_exact(prof, memoryClockMHz);
    if (!t) CHECK(NVML_ERROR_NOT_FOUND);
    rc = fill_clocks(count, clocksMHz, t->gfx, t->n);
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, nvmlClockType_t type, unsigned int *clock) {
    ENTER("nvmlDeviceGetClockInfo");
    PHYS(device);
    if (!clock || (unsigned)type >= NVML_CLOCK_COUNT) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    READ_STATE(g);
    struct oppoint o;
    op_point(g, &o);
    *clock = type == NVML_CLOCK_MEM ? o.mem : type == NVML_CLOCK_VIDEO ? prof->video_mhz : o.sm;
    END_READ();
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, nvmlClockType_t type, unsigned int *clock) {
    ENTER("nvmlDeviceGetMaxClockInfo");
    PHYS(device);
    if (!clock || (unsigned)type >= NVML_CLOCK_COUNT) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    *clock = type == NVML_CLOCK_MEM ? prof_memmax(prof) : type == NVML_CLOCK_VIDEO ? prof->video_mhz : prof_fmax(prof);
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetApplicationsClock(nvmlDevice_t device, nvmlClockType_t clockType,
                                                   unsigned int *clockMHz) {
    ENTER("nvmlDeviceGetApplicationsClock");
    PHYS(device);
    if (!clockMHz || (unsigned)clockType >= NVML_CLOCK_COUNT) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    if (clockType == NVML_CLOCK_VIDEO) CHECK(NVML_ERROR_NOT_SUPPORTED);
    READ_STATE(g);
    if (clockType == NVML_CLOCK_MEM) *clockMHz = g->app_mem ? g->app_mem : prof_memmax(prof);
    else *clockMHz = g->app_gfx ? g->app_gfx : prof_fmax(prof);
    END_READ();
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetDefaultApplicationsClock(nvmlDevice_t device, nvmlClockType_t clockType,
                                                          unsigned int *clockMHz) {
    ENTER("nvmlDeviceGetDefaultApplicationsClock");
    PHYS(device);
    if (!clockMHz || (unsigned)clockType >= NVML_CLOCK_COUNT) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    if (clockType == NVML_CLOCK_VIDEO) CHECK(NVML_ERROR_NOT_SUPPORTED);
    *clockMHz = clockType == NVML_CLOCK_MEM ? prof_memmax(prof) : prof_fmax(prof);
    LEAVE
}

static nvmlReturn_t ch_app_clocks(struct gpu_state *g, const struct fk_profile *p, const unsigned *a, int root) {
    if (!root && app_clocks_restricted(g)) return NVML_ERROR_NO_PERMISSION;
    const struct fk_memtab *t = memtab_exact(p, a[0]);
    int ok = 0;
    for (unsigned i = 0; t && i < t->n; i++) ok |= t->gfx[i] == a[1];
    if (!ok) return NVML_ERROR_INVALID_ARGUMENT; /* not a supported (memory, graphics) pair */
    g->app_mem = a[0];
    g->app_gfx = a[1];
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceSetApplicationsClocks(nvmlDevice_t device, unsigned int memClockMHz,
                                                    unsigned int graphicsClockMHz) {
    unsigned a[2] = {memClockMHz, graphicsClockMHz};
    return run_setter("nvmlDeviceSetApplicationsClocks", device, ch_app_clocks, a, 2, "%u,%u");
}

static nvmlReturn_t ch_reset_app(struct gpu_state *g, const struct fk_profile *p, const unsigned *a, int root) {
    (void)p;
    (void)a;
    if (!root && app_clocks_restricted(g)) return NVML_ERROR_NO_PERMISSION;
    g->app_mem = g->app_gfx = 0;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceResetApplicationsClocks(nvmlDevice_t device) {
    return run_setter("nvmlDeviceResetApplicationsClocks", device, ch_reset_app, NULL, 0, "");
}

EXPORT nvmlReturn_t nvmlDeviceGetAPIRestriction(nvmlDevice_t device, nvmlRestrictedAPI_t apiType,
                                                nvmlEnableState_t *isRestricted) {
    ENTER("nvmlDeviceGetAPIRestriction");
    PHYS(device);
    if (!isRestricted || (unsigned)apiType >= NVML_RESTRICTED_API_COUNT) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    /* no auto boost on Volta+ */
    if (apiType == NVML_RESTRICTED_API_SET_AUTO_BOOSTED_CLOCKS) CHECK(NVML_ERROR_NOT_SUPPORTED);
    READ_STATE(g);
    *isRestricted = app_clocks_restricted(g) ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
    END_READ();
    LEAVE
}

static nvmlReturn_t ch_api_restriction(struct gpu_state *g, const struct fk_profile *p, const unsigned *a, int root) {
    (void)p;
    if (a[0] >= NVML_RESTRICTED_API_COUNT || a[1] > 1) return NVML_ERROR_INVALID_ARGUMENT;
    if (a[0] == NVML_RESTRICTED_API_SET_AUTO_BOOSTED_CLOCKS) return NVML_ERROR_NOT_SUPPORTED;
    if (!root) return NVML_ERROR_NO_PERMISSION;
    g->api_restricted = (int)a[1];
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceSetAPIRestriction(nvmlDevice_t device, nvmlRestrictedAPI_t apiType,
                                                nvmlEnableState_t isRestricted) {
    unsigned a[2] = {(unsigned)apiType, (unsigned)isRestricted};
    return run_setter("nvmlDeviceSetAPIRestriction", device, ch_api_restriction, a, 2, "%u,%u");
}

static nvmlReturn_t ch_persistence(struct gpu_state *g, const struct fk_profile *p, const unsigned *a, int root) {
    (void)p;
    if (!root) return NVML_ERROR_NO_PERMISSION;
    if (a[0] > 1) return NVML_ERROR_INVALID_ARGUMENT;
    g->persistence = (int)a[0];
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceSetPersistenceMode(nvmlDevice_t device, nvmlEnableState_t mode) {
    unsigned a[1] = {(unsigned)mode};
    return run_setter("nvmlDeviceSetPersistenceMode", device, ch_persistence, a, 1, "%u");
}

static int symbolic(unsigned v) { return v >= NVML_CLOCK_LIMIT_ID_RANGE_START; }

static nvmlReturn_t ch_gpu_locked(struct gpu_state *g, const struct fk_profile *p, const unsigned *a, int root) {
    if (!root) return NVML_ERROR_NO_PERMISSION;
    unsigned lo = a[0], hi = a[1];
    if (symbolic(lo) || symbolic(hi)) {
        if (!symbolic(lo) || !symbolic(hi)) return NVML_ERROR_INVALID_ARGUMENT; /* mixed numeric and symbolic */
        if ((lo != NVML_CLOCK_LIMIT_ID_TDP && lo != NVML_CLOCK_LIMIT_ID_UNLIMITED) ||
            (hi != NVML_CLOCK_LIMIT_ID_TDP && hi != NVML_CLOCK_LIMIT_ID_UNLIMITED))
            return NVML_ERROR_INVALID_ARGUMENT;
        if (lo == NVML_CLOCK_LIMIT_ID_UNLIMITED && hi == NVML_CLOCK_LIMIT_ID_UNLIMITED) {
            g->locked_sm_min = g->locked_sm_max = 0; /* == nvmlDeviceResetGpuLockedClocks */
            return NVML_SUCCESS;
        }
        const struct fk_memtab *t = &p->mem[0];
        lo = lo == NVML_CLOCK_LIMIT_ID_TDP ? t->gfx[0] : t->gfx[t->n - 1];
        hi = t->gfx[0];
    }
    if (hi == 0 || lo > hi) return NVML_ERROR_INVALID_ARGUMENT;
    g->locked_sm_min = lo;
    g->locked_sm_max = hi;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceSetGpuLockedClocks(nvmlDevice_t device, unsigned int minGpuClockMHz,
                                                 unsigned int maxGpuClockMHz) {
    unsigned a[2] = {minGpuClockMHz, maxGpuClockMHz};
    return run_setter("nvmlDeviceSetGpuLockedClocks", device, ch_gpu_locked, a, 2, "%u,%u");
}

static nvmlReturn_t ch_reset_gpu_locked(struct gpu_state *g, const struct fk_profile *p, const unsigned *a, int root) {
    (void)p;
    (void)a;
    if (!root) return NVML_ERROR_NO_PERMISSION;
    g->locked_sm_min = g->locked_sm_max = 0;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceResetGpuLockedClocks(nvmlDevice_t device) {
    return run_setter("nvmlDeviceResetGpuLockedClocks", device, ch_reset_gpu_locked, NULL, 0, "");
}

static nvmlReturn_t ch_mem_locked(struct gpu_state *g, const struct fk_profile *p, const unsigned *a, int root) {
    if (!p->mem_lock) return NVML_ERROR_NOT_SUPPORTED; /* "For Ampere or newer" */
    if (!root) return NVML_ERROR_NO_PERMISSION;
    if (a[1] == 0 || a[0] > a[1]) return NVML_ERROR_INVALID_ARGUMENT;
    g->locked_mem_min = a[0];
    g->locked_mem_max = a[1];
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceSetMemoryLockedClocks(nvmlDevice_t device, unsigned int minMemClockMHz,
                                                    unsigned int maxMemClockMHz) {
    unsigned a[2] = {minMemClockMHz, maxMemClockMHz};
    return run_setter("nvmlDeviceSetMemoryLockedClocks", device, ch_mem_locked, a, 2, "%u,%u");
}

static nvmlReturn_t ch_reset_mem_locked(struct gpu_state *g, const struct fk_profile *p, const unsigned *a, int root) {
    (void)a;
    if (!p->mem_lock) return NVML_ERROR_NOT_SUPPORTED;
    if (!root) return NVML_ERROR_NO_PERMISSION;
    g->locked_mem_min = g->locked_mem_max = 0;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceResetMemoryLockedClocks(nvmlDevice_t device) {
    return run_setter("nvmlDeviceResetMemoryLockedClocks", device, ch_reset_mem_locked, NULL, 0, "");
}

static nvmlReturn_t reasons(nvmlDevice_t device, const char *name, unsigned long long *out, int supported) {
    ENTER(name);
    PHYS(device);
    if (!out) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    if (supported) {
        *out = FK_SUPPORTED_REASONS;
        goto out;
    }
    READ_STATE(g);
    struct oppoint o;
    op_point(g, &o);
    *out = o.reasons;
    END_READ();
    LEAVE
}

#ifndef FAKENVML_R470
EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device,
                                                           unsigned long long *clocksEventReasons) {
    return reasons(device, "nvmlDeviceGetCurrentClocksEventReasons", clocksEventReasons, 0);
}
EXPORT nvmlReturn_t nvmlDeviceGetSupportedClocksEventReasons(nvmlDevice_t device,
                                                             unsigned long long *supportedClocksEventReasons) {
    return reasons(device, "nvmlDeviceGetSupportedClocksEventReasons", supportedClocksEventReasons, 1);
}
#endif
EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device,
                                                              unsigned long long *clocksThrottleReasons) {
    return reasons(device, "nvmlDeviceGetCurrentClocksThrottleReasons", clocksThrottleReasons, 0);
}
EXPORT nvmlReturn_t nvmlDeviceGetSupportedClocksThrottleReasons(nvmlDevice_t device,
                                                                unsigned long long *supportedClocksThrottleReasons) {
    return reasons(device, "nvmlDeviceGetSupportedClocksThrottleReasons", supportedClocksThrottleReasons, 1);
}

/* ---------------------------------------------------------------------------------------------- */
/* Power, energy, temperature, utilization                                                        */
/* ---------------------------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy) {
    ENTER("nvmlDeviceGetTotalEnergyConsumption");
    PHYS(device);
    if (!energy) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    READ_STATE(g);
    *energy = counter_mj(g, &g_cfg.gpu[idx], now);
    END_READ();
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    ENTER("nvmlDeviceGetPowerUsage");
    PHYS(device);
    if (!power) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    READ_STATE(g);
    *power = (unsigned)lround(power_avg(g, now, g_cfg.gpu[idx].power_avg_ms));
    END_READ();
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int valuesCount, nvmlFieldValue_t *values) {
    ENTER("nvmlDeviceGetFieldValues");
    int idx = -1, mig = -1;
    CHECK(resolve(device, &idx, &mig));
    if (!values || valuesCount < 0) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    const struct fk_profile *p = &FK_PROFILES[g_cfg.gpu[idx].profile];
    READ_STATE(g);
    long long ts = realtime_us();
    for (int i = 0; i < valuesCount; i++) {
        nvmlFieldValue_t *v = &values[i];
        unsigned id = v->fieldId;
        v->timestamp = ts;
        v->latencyUsec = 0;
        v->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        v->value.ullVal = 0;
        v->nvmlReturn = NVML_SUCCESS;
        if (id == 0 || id >= NVML_FI_MAX) {
            v->nvmlReturn = NVML_ERROR_INVALID_ARGUMENT;
            continue;
        }
#ifdef FAKENVML_R470
        if (id >= NVML_FI_DEV_POWER_AVERAGE && id <= NVML_FI_DEV_POWER_REQUESTED_LIMIT) {
            v->nvmlReturn = NVML_ERROR_NOT_SUPPORTED; /* these field ids came after R470 */
            continue;
        }
#endif
        int power_field =
            id >= NVML_FI_DEV_POWER_AVERAGE && id <= NVML_FI_DEV_POWER_REQUESTED_LIMIT && id != NVML_FI_DEV_ENERGY;
        if (mig >= 0 || (power_field && v->scopeId != NVML_POWER_SCOPE_GPU)) {
            v->nvmlReturn = NVML_ERROR_NOT_SUPPORTED; /* MIG devices have no power/energy readings */
            continue;
        }
        switch (id) {
        case NVML_FI_DEV_POWER_AVERAGE:
            if (!p->average_field) v->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
            else {
                int w = g_cfg.gpu[idx].power_avg_ms > 0 ? g_cfg.gpu[idx].power_avg_ms : 1000;
                v->value.uiVal = (unsigned)lround(power_avg(g, now, w));
            }
            break;
        case NVML_FI_DEV_POWER_INSTANT: v->value.uiVal = (unsigned)lround(power_now(g)); break;
        case NVML_FI_DEV_POWER_MIN_LIMIT: v->value.uiVal = p->limit_min_mw; break;
        case NVML_FI_DEV_POWER_MAX_LIMIT: v->value.uiVal = p->limit_max_mw; break;
        case NVML_FI_DEV_POWER_DEFAULT_LIMIT: v->value.uiVal = p->limit_default_mw; break;
        case NVML_FI_DEV_POWER_CURRENT_LIMIT:
        case NVML_FI_DEV_POWER_REQUESTED_LIMIT: v->value.uiVal = g->power_limit_mw; break;
        case NVML_FI_DEV_ENERGY:
        case NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION:
            v->valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
            v->value.ullVal = counter_mj(g, &g_cfg.gpu[idx], now);
            break;
        default: v->nvmlReturn = NVML_ERROR_NOT_SUPPORTED; break;
        }
    }
    END_READ();
    LEAVE
}

static int temperature_c(const struct gpu_state *g, long long now) {
    return (int)lround(30.0 + 0.1 * power_avg(g, now, 1000) / 1000.0); /* ambient + R * P (1 s lag) */
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, nvmlTemperatureSensors_t sensorType,
                                             unsigned int *temp) {
    ENTER("nvmlDeviceGetTemperature");
    PHYS(device);
    if (!temp || sensorType != NVML_TEMPERATURE_GPU) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    READ_STATE(g);
    *temp = (unsigned)temperature_c(g, now);
    END_READ();
    LEAVE
}

#ifndef FAKENVML_R470
EXPORT nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_t *temperature) {
    ENTER("nvmlDeviceGetTemperatureV");
    PHYS(device);
    if (!temperature) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    if (temperature->version != nvmlTemperature_v1) CHECK(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    if (temperature->sensorType != NVML_TEMPERATURE_GPU) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    READ_STATE(g);
    temperature->temperature = temperature_c(g, now);
    END_READ();
    LEAVE
}
#endif

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    ENTER("nvmlDeviceGetUtilizationRates");
    PHYS(device);
    if (!utilization) CHECK(NVML_ERROR_INVALID_ARGUMENT);
    READ_STATE(g);
    utilization->gpu = (unsigned)lround(100.0 * g->load);
    utilization->memory = (unsigned)lround(45.0 * g->load);
    END_READ();
    LEAVE
}

/* ---------------------------------------------------------------------------------------------- */
/* Test hooks (not NVML): exact truth for the tests, through ctypes                               */
/* ---------------------------------------------------------------------------------------------- */

static int hook_begin(unsigned index, int *fd, long long now) {
    if (ensure_config() != 0 || index >= (unsigned)g_cfg.ngpus) return -1;
    int dirty = 0;
    *fd = state_begin(now, 0, &dirty);
    if (*fd < 0) return -1;
    if (dirty) state_write(&g_st);
    return 0;
}

/* CLOCK_MONOTONIC in ns (Python's time.monotonic_ns() on Linux reads the same clock). */
EXPORT long long fakenvml_now_ns(void) { return now_ns(); }

EXPORT const char *fakenvml_variant(void) { return FK_VARIANT; }

EXPORT int fakenvml_refcount(void) {
    LOCK();
    int r = g_refcount;
    UNLOCK();
    return r;
}

/* Exact (unquantized) energy at time t_ns, on the counter's scale (offset included), in mJ; NAN on error. */
EXPORT double fakenvml_energy_at_ns(unsigned index, long long t_ns) {
    LOCK();
    int fd;
    double e = NAN;
    if (hook_begin(index, &fd, now_ns()) == 0) {
        e = g_st.gpu[index].offset_mj + energy_at(&g_st.gpu[index], t_ns);
        state_end(fd, 0);
    }
    UNLOCK();
    return e;
}

EXPORT double fakenvml_true_energy_mj(unsigned index) { return fakenvml_energy_at_ns(index, now_ns()); }

/* Instantaneous true power in mW; NAN on error. */
EXPORT double fakenvml_true_power_mw(unsigned index) {
    LOCK();
    int fd;
    double p = NAN;
    if (hook_begin(index, &fd, now_ns()) == 0) {
        p = power_now(&g_st.gpu[index]);
        state_end(fd, 0);
    }
    UNLOCK();
    return p;
}

/* The current effective SM clock (MHz), as the power model sees it; -1 on error. */
EXPORT int fakenvml_effective_sm_mhz(unsigned index) {
    LOCK();
    int fd, f = -1;
    if (hook_begin(index, &fd, now_ns()) == 0) {
        struct oppoint o;
        op_point(&g_st.gpu[index], &o);
        f = (int)o.sm;
        state_end(fd, 0);
    }
    UNLOCK();
    return f;
}

/* Change the busy fraction (0..1) of GPU ``index`` now (persisted until the next nvmlInit re-applies the
   configured load). 0: ok; -1: error. */
EXPORT int fakenvml_set_load(unsigned index, double load) {
    if (!(load >= 0.0 && load <= 1.0)) return -1;
    LOCK();
    int fd, r = -1;
    long long now = now_ns();
    if (hook_begin(index, &fd, now) == 0) {
        g_st.gpu[index].load = load;
        record_change(&g_st.gpu[index], now);
        r = state_end(fd, 1);
    }
    UNLOCK();
    return r;
}

EXPORT int fakenvml_counter_period_ms(unsigned index) {
    LOCK();
    int r = ensure_config() == 0 && index < (unsigned)g_cfg.ngpus ? g_cfg.gpu[index].counter_period_ms : -1;
    UNLOCK();
    return r;
}

EXPORT int fakenvml_power_avg_ms(unsigned index) {
    LOCK();
    int r = ensure_config() == 0 && index < (unsigned)g_cfg.ngpus ? g_cfg.gpu[index].power_avg_ms : -1;
    UNLOCK();
    return r;
}
