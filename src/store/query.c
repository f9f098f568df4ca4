/* store_query.c — validation, named selectors over ordered indexes, policy
 * reload and info for the store actor (see store_query.h). */
#include "store/query.h"

#include "msgs/msgs.h"
#include "store/index.h"
#include "store/page.h"
#include "therasync/json.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define LOG "store"
#define MAX_INDEXES 32
#define KEY_MAX 1024
#define DAY_MS (24LL * 3600 * 1000)

struct ts_sq_coll {
    ts_sq_t *sq;
    const char *name;
    void *coll;                     /* the store's collection, for hooks.each */
    ts_index_t *idx[MAX_INDEXES];
    size_t nidx;
};

struct ts_sq {
    ts_policy_t *policy;
    ts_sq_hooks_t hooks;
    ts_sq_coll_t colls[TS_MAX_COLLECTIONS];
    size_t ncolls;
    bool bulk;
    char dir[PATH_MAX];
    char last_error[512];           /* of the last failed reload; "" after a good one */
    uint64_t reloads, reload_failures;
    ts_readset_t *read;             /* the run's read-set, filled when the cache asks */
    ts_cache_run_t *run;            /* an extended run's rows go here (NULL: not one) */
    uint64_t queries, candidates;   /* named-selector queries, documents shown to where */
    int64_t query_us;               /* time spent in them */
};

/* ---- policies dir ---- */

static bool is_policies_dir(const char *dir)
{
    char path[PATH_MAX + 32];
    struct stat st;
    snprintf(path, sizeof path, "%s/validate.lua", dir);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The shipped policies next to the executable; 0 or -1 (tried paths in err). */
static int find_shipped(char *out, size_t outlen, char *err, size_t errlen)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(err, errlen, "no --policies given and the executable's path is unknown");
        return -1;
    }
    exe[n] = '\0';
    const char *dir = dirname(exe);
    const char *rel[] = {"../policies", "../share/therasync/policies"};
    char tried[2][PATH_MAX];
    for (int i = 0; i < 2; i++) {
        snprintf(tried[i], sizeof tried[i], "%s/%s", dir, rel[i]);
        char real[PATH_MAX];
        if (is_policies_dir(tried[i]) && realpath(tried[i], real)) {
            snprintf(out, outlen, "%s", real);
            return 0;
        }
    }
    snprintf(err, errlen,
             "no policies: --policies (config `policies`) not given and no shipped policies "
             "at %.1000s or %.1000s",
             tried[0], tried[1]);
    return -1;
}

/* ---- ctx.find ---- */

static ts_sq_coll_t *coll_named(ts_sq_t *self, const char *name)
{
    for (size_t i = 0; name && i < self->ncolls; i++)
        if (strcmp(self->colls[i].name, name) == 0)
            return &self->colls[i];
    return NULL;
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static ts_index_t *find_index(const ts_sq_coll_t *c, const char *field, const char *order)
{
    for (size_t i = 0; i < c->nidx; i++)
        if (c->idx[i] && strcmp(ts_index_field(c->idx[i]), field) == 0 &&
            same_str(ts_index_order_field(c->idx[i]), order))
            return c->idx[i];
    return NULL;
}

typedef struct {
    ts_sq_t *sq;
    ts_index_t *idx;
} build_arg_t;

static void build_one(void *arg, void *doc)
{
    build_arg_t *b = arg;
    ts_policy_doc_t d;
    b->sq->hooks.view(doc, &d);
    if (d.text)
        ts_index_set(b->idx, doc, d.text, d.len);
}

/* The index's way to a document's id: ties of order keys go by id. */
static const char *doc_id(void *arg, void *doc, size_t *len)
{
    ts_sq_t *sq = arg;
    ts_policy_doc_t d;
    sq->hooks.view(doc, &d);
    *len = d.id_len;
    return d.id;
}

/* A new index on (field, order) over the collection's current documents. */
static ts_index_t *build_index(ts_sq_coll_t *c, const char *field, const char *order)
{
    if (c->nidx == MAX_INDEXES) {
        ts_warn(LOG, "%s: more than %d indexes; %s is served by scans", c->name, MAX_INDEXES,
                field);
        return NULL;
    }
    ts_index_t *idx = ts_index_new(field, order, doc_id, c->sq);
    build_arg_t b = {c->sq, idx};
    ts_index_bulk(idx, true);
    c->sq->hooks.each(c->coll, build_one, &b);
    ts_index_bulk(idx, c->sq->bulk);
    c->idx[c->nidx++] = idx;
    ts_debug(LOG, "%s: index on %s%s%s: %zu documents", c->name, field, order ? " by " : "",
             order ? order : "", ts_index_size(idx));
    return idx;
}

typedef struct {
    ts_sq_t *sq;
    const char *field;
    const char *value;
    ts_policy_visit_doc_fn visit;
    void *visit_arg;
    int stop;
} scan_find_t;

static void scan_find_one(void *arg, void *doc)
{
    scan_find_t *s = arg;
    if (s->stop)
        return;
    ts_policy_doc_t d;
    s->sq->hooks.view(doc, &d);
    const char *v;
    size_t vn;
    char key[KEY_MAX];
    if (!d.text || !ts_json_text_field(d.text, d.len, s->field, strlen(s->field), &v, &vn))
        return;
    int kl = ts_index_key_text(v, vn, key, sizeof key);
    if (kl < 0 || strcmp(key, s->value) != 0)
        return;
    s->stop = s->visit(s->visit_arg, &d, NULL);
}

/* Writes the day of ms as "YYYY-MM-DD" (10 characters and a NUL): a range
 * bound on RFC 3339 keys compared as text, without snprintf and gmtime_r
 * (which takes a lock). Civil date from days: H. Hinnant's algorithm. */
static void day_key(int64_t ms, char out[11])
{
    int64_t z = ms / DAY_MS - (ms % DAY_MS < 0) + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);
    int64_t v[3] = {y < 0 ? 0 : y > 9999 ? 9999 : y, m, d}, w[3] = {4, 2, 2};
    char *p = out;
    for (int i = 0; i < 3; i++) {
        for (int k = (int)w[i] - 1; k >= 0; k--, v[i] /= 10)
            p[k] = (char)('0' + v[i] % 10);
        p += w[i];
        *p++ = i < 2 ? '-' : '\0';
    }
}

/* ctx.find: the documents of collection whose field equals value, through an
 * index on field (made on first use; ordered by the time field when a range
 * is given, so only the documents near the range are visited). Documents go
 * to the visitor as the store keeps them (text), never parsed here. */
static int sq_find(void *arg, const ts_policy_find_t *f, ts_policy_visit_doc_fn visit,
                   void *visit_arg)
{
    ts_sq_t *self = arg;
    ts_sq_coll_t *c = coll_named(self, f->collection);
    if (!c)
        return 0; /* unknown collection: nothing there */
    ts_index_t *idx = find_index(c, f->field, f->time_field);
    if (!idx && !f->time_field)
        for (size_t i = 0; i < c->nidx && !idx; i++)
            if (strcmp(ts_index_field(c->idx[i]), f->field) == 0)
                idx = c->idx[i];
    if (!idx && !self->bulk)
        idx = build_index(c, f->field, f->time_field);
    if (!idx) { /* no index possible: scan */
        scan_find_t s = {self, f->field, f->value, visit, visit_arg, 0};
        self->hooks.each(c->coll, scan_find_one, &s);
        return 0;
    }
    ts_index_entry_t *const *e;
    size_t n = ts_index_bucket(idx, f->value, strlen(f->value), &e), lo = 0, hi = n;
    const char *order = ts_index_order_field(idx);
    bool by_time = f->time_field && order && strcmp(order, f->time_field) == 0;
    if (by_time) {
        /* Times are compared as text in the index; widen the window by a day
         * on each side so offsets (+14:00) and formats cannot hide a document:
         * from the start of the day before `from`'s, to the end of the day
         * after `to`'s ("~" sorts after any time text on that day). The
         * visitor filters exactly. */
        char from[11], to[12];
        ts_okey_t k = {.kind = TS_OKEY_STR};
        if (f->from_ms > INT64_MIN + DAY_MS) {
            day_key(f->from_ms - DAY_MS, from);
            k.str = from, k.len = 10;
            lo = ts_index_lower_bound(e, n, &k);
        }
        if (f->to_ms < INT64_MAX - DAY_MS) {
            day_key(f->to_ms + DAY_MS, to);
            to[10] = '~', to[11] = '\0';
            k.str = to, k.len = 11;
            hi = ts_index_upper_bound(e, n, &k);
        }
    }
    for (size_t i = lo; i < hi; i++) {
        /* The order key is the time field's text: filter the range exactly
         * here, rather than have the visitor look for it in each document. */
        int64_t ms;
        const ts_okey_t *o = &e[i]->order;
        if (by_time && (o->kind != TS_OKEY_STR || ts_parse_rfc3339(o->str, &ms) != 0 ||
                        ms < f->from_ms || ms >= f->to_ms))
            continue;
        ts_policy_doc_t d;
        self->hooks.view(e[i]->doc, &d);
        if (d.text && visit(visit_arg, &d, by_time ? &ms : NULL))
            break;
    }
    return 0;
}

/* ---- life ---- */

ts_sq_t *ts_sq_new(const ts_config_t *config, const ts_sq_hooks_t *hooks, char *err,
                   size_t errlen)
{
    ts_sq_t *self = ts_xcalloc(1, sizeof *self);
    self->hooks = *hooks;
    if (config->policies_dir) {
        if (!realpath(config->policies_dir, self->dir)) {
            snprintf(err, errlen, "policies directory %.1000s: %s", config->policies_dir,
                     strerror(errno));
            free(self);
            return NULL;
        }
    } else if (find_shipped(self->dir, sizeof self->dir, err, errlen)) {
        free(self);
        return NULL;
    }
    ts_policy_opts_t opts = {
        .mem_cap_bytes = config->lua.memory_bytes,
        .instr_budget = config->lua.instruction_budget,
        .clinic_config = config->clinic,
        .find = sq_find,
        .lookup_arg = self,
        .name = "store",
    };
    char perr[512];
    self->policy = ts_policy_new(self->dir, &opts, perr, sizeof perr);
    if (!self->policy) {
        snprintf(err, errlen, "policies in %.1000s do not load: %s", self->dir, perr);
        free(self);
        return NULL;
    }
    return self;
}

void ts_sq_destroy(ts_sq_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ts_sq_t *self = *self_p;
    for (size_t i = 0; i < self->ncolls; i++)
        for (size_t k = 0; k < self->colls[i].nidx; k++)
            ts_index_destroy(&self->colls[i].idx[k]);
    ts_policy_destroy(&self->policy);
    free(self);
    *self_p = NULL;
}

ts_policy_t *ts_sq_policy(ts_sq_t *self) { return self->policy; }

/* Makes the collection's index set match the selectors: keeps indexes still
 * declared, builds new ones, drops the rest (look-up indexes come back on
 * their next use). */
static void sync_indexes(ts_sq_coll_t *c)
{
    ts_policy_t *p = c->sq->policy;
    ts_index_t *keep[MAX_INDEXES];
    size_t nkeep = 0;
    for (size_t i = 0; i < ts_policy_selector_count(p); i++) {
        const ts_policy_selector_t *s = ts_policy_selector_at(p, i);
        if (!s->index_field || strcmp(s->collection, c->name) != 0)
            continue;
        bool have = false;
        for (size_t k = 0; k < nkeep; k++)
            have |= strcmp(ts_index_field(keep[k]), s->index_field) == 0 &&
                    same_str(ts_index_order_field(keep[k]), s->order_field);
        ts_index_t *idx = have ? NULL : find_index(c, s->index_field, s->order_field);
        if (!idx || nkeep == MAX_INDEXES)
            continue; /* missing ones are built below */
        for (size_t k = 0; k < c->nidx; k++) /* take it out of the old set */
            if (c->idx[k] == idx)
                c->idx[k] = NULL;
        keep[nkeep++] = idx;
    }
    for (size_t k = 0; k < c->nidx; k++)
        ts_index_destroy(&c->idx[k]);
    c->nidx = 0;
    for (size_t k = 0; k < nkeep; k++)
        if (keep[k])
            c->idx[c->nidx++] = keep[k];
    /* What is declared and missing is built on its first use (a query
     * with the index param): starting with a million documents must not
     * pay for indexes nobody asked for yet, in time or memory. */
}

ts_sq_coll_t *ts_sq_attach(ts_sq_t *self, const char *name, void *coll)
{
    if (self->ncolls == TS_MAX_COLLECTIONS)
        return NULL;
    ts_sq_coll_t *c = &self->colls[self->ncolls++];
    memset(c, 0, sizeof *c);
    c->sq = self;
    c->name = name;
    c->coll = coll;
    sync_indexes(c);
    return c;
}

void ts_sq_changed(ts_sq_coll_t *c, void *doc, const char *text, size_t len)
{
    for (size_t i = 0; c && i < c->nidx; i++)
        ts_index_set(c->idx[i], doc, text, len);
}

void ts_sq_bulk(ts_sq_t *self, bool on)
{
    self->bulk = on;
    for (size_t i = 0; i < self->ncolls; i++)
        for (size_t k = 0; k < self->colls[i].nidx; k++)
            ts_index_bulk(self->colls[i].idx[k], on);
}

/* ---- validation ---- */

/* Answers call with a validation's outcome rc; 0 = accepted. */
static int answer_validation(ts_call_t *call, int rc, cJSON *errors, const char *err)
{
    if (rc == TS_POLICY_OK)
        return 0;
    if (rc == TS_POLICY_INVALID) {
        const cJSON *first = cJSON_GetArrayItem(errors, 0);
        const char *field = ts_json_string(first, "field");
        const char *msg = ts_json_string(first, "message");
        int n = cJSON_GetArraySize(errors);
        ts_call_fail(call, TS_E_VALIDATION, "validation failed: %s%s%s%s", field ? field : "",
                     field && *field ? ": " : "", msg ? msg : "invalid",
                     n > 1 ? " (and more, see error.data.errors)" : "");
        call->err_data = cJSON_CreateObject();
        cJSON_AddItemToObject(call->err_data, "errors", errors);
        return -1;
    }
    cJSON_Delete(errors);
    ts_call_fail(call, TS_E_POLICY, "%s", err);
    return -1;
}

int ts_sq_validate(ts_sq_t *self, ts_call_t *call, const char *collection, const cJSON *doc,
                   const cJSON *previous)
{
    cJSON *errors = NULL;
    char err[512];
    int rc = ts_policy_validate(self->policy, collection, doc, previous, &errors, err, sizeof err);
    return answer_validation(call, rc, errors, err);
}

bool ts_sq_validates(ts_sq_t *self, const char *collection)
{
    return ts_policy_has_validator(self->policy, collection);
}

int ts_sq_validate_text(ts_sq_t *self, ts_call_t *call, const char *collection,
                        const ts_policy_doc_t *doc, const ts_policy_doc_t *previous)
{
    if (!ts_sq_validates(self, collection))
        return 0; /* no rule: skip the protected call */
    cJSON *errors = NULL;
    char err[512];
    int rc = ts_policy_validate_text(self->policy, collection, doc, previous, &errors, err,
                                     sizeof err);
    return answer_validation(call, rc, errors, err);
}

/* ---- named selectors ---- */

/* A scan-path candidate: its order key (owned), id and document. */
typedef struct {
    ts_okey_t key;
    void *doc;
    const char *id;
    size_t id_len;
} keyed_t;

typedef struct {
    ts_sq_t *sq;
    /* candidates in ascending (order key, id) order: index entries
     * (entries != NULL) or a sorted array of keyed documents */
    const ts_index_t *idx;
    ts_index_entry_t *const *entries;
    const keyed_t *keyed;
    size_t pos, end;  /* next position, one past the last (asc) */
    bool desc;        /* walk from end-1 down to pos */
    const char *order_field; /* for the first row's order key (read-set) */
    long limit, count;/* this page's size, items in it so far */
    bool final;       /* the page ends the selector's limit: no look beyond it */
    bool more;        /* a match beyond the page was seen: there is a next page */
    size_t cur, last; /* the candidate shown last; the last one put in the page */
    const char *last_id;
    size_t last_id_len;
    ts_buf_t *out;
    /* index param, checked on a scan */
    const char *field;
    const char *value;
} sel_scan_t;

/* Candidates are scattered over the heap: ask for the next ones' entry,
 * document and text ahead of time, so their cache misses overlap. */
static void prefetch_ahead(const sel_scan_t *s, size_t i)
{
    if (!s->entries)
        return;
    size_t far = s->desc ? i - (i >= 8 ? 8 : i) : i + 8;
    size_t near = s->desc ? i - (i >= 4 ? 4 : i) : i + 4;
    if (far >= s->pos && far < s->end)
        __builtin_prefetch(s->entries[far]);
    if (near >= s->pos && near < s->end)
        __builtin_prefetch(s->entries[near]->doc);
}

static int sel_next(void *arg, ts_policy_doc_t *d)
{
    sel_scan_t *s = arg;
    while (s->pos < s->end) {
        size_t i = s->desc ? --s->end : s->pos++;
        prefetch_ahead(s, i);
        void *doc = s->entries ? s->entries[i]->doc : s->keyed[i].doc;
        s->sq->candidates++;
        s->sq->hooks.view(doc, d);
        if (d->text) {
            s->cur = i;
            return 1;
        }
    }
    return 0;
}

/* Puts a match in the page; once the page is full, the next match only
 * says that there is more (unless the page ends the selector's limit). */
static int sel_emit(void *arg, const ts_policy_doc_t *d)
{
    sel_scan_t *s = arg;
    if (s->count >= s->limit) {
        s->more = true;
        return 1;
    }
    ts_buf_t *b = s->out;
    ts_readset_t *r = s->sq->read;
    const char *v;
    size_t vn;
    if (r && !s->count && s->order_field) { /* the first row's order key */
        ts_okey_t k = {0};
        if (ts_json_text_field(d->text, d->len, s->order_field, strlen(s->order_field), &v, &vn))
            ts_okey_from_text(v, vn, &k);
        r->has_first = true;
        r->first_kind = k.kind;
        r->first_num = k.num;
        r->first_str = k.str;
        r->first_len = k.len;
    }
    size_t row_start = b->len + (s->count ? 1 : 0);
    int rc = ts_buf_puts(b, s->count ? ",{\"id\":" : "{\"id\":");
    rc |= ts_buf_json_string(b, d->id, d->id_len);
    if (d->len > 2) {
        rc |= ts_buf_puts(b, ",");
        rc |= ts_buf_append(b, d->text + 1, d->len - 1);
    } else {
        rc |= ts_buf_puts(b, "}");
    }
    if (rc)
        return -1;
    ts_cache_run_t *run = s->sq->run;
    if (run) { /* an extended run keeps each row apart, with its order key */
        if ((run->nrows & (run->nrows - 1)) == 0) /* 0, 1, 2, 4...: double */
            run->rows = ts_xrealloc(run->rows, (run->nrows < 8 ? 16 : run->nrows * 2) *
                                                   sizeof *run->rows);
        ts_run_row_t *row = &run->rows[run->nrows++];
        ts_okey_t k = {0};
        if (s->order_field &&
            ts_json_text_field(d->text, d->len, s->order_field, strlen(s->order_field), &v, &vn))
            ts_okey_from_text(v, vn, &k);
        *row = (ts_run_row_t){.off = (uint32_t)row_start, .len = (uint32_t)(b->len - row_start),
                              .kind = k.kind, .num = k.num, .str = k.str, .str_len = k.len};
    }
    s->last = s->cur;
    s->last_id = d->id;
    s->last_id_len = d->id_len;
    return ++s->count >= s->limit && s->final ? 1 : 0;
}

/* Scan path: every visible document (of the index param's value, when one
 * is given), to be sorted by (order_field, id). */
typedef struct {
    ts_sq_t *sq;
    keyed_t *rows;
    size_t n, cap;
    const char *order;
    const char *field, *value;
} collect_t;

static void collect_one(void *arg, void *doc)
{
    collect_t *c = arg;
    ts_policy_doc_t d;
    c->sq->hooks.view(doc, &d);
    if (!d.text)
        return;
    const char *v;
    size_t vn;
    if (c->field) {
        char key[KEY_MAX];
        if (!ts_json_text_field(d.text, d.len, c->field, strlen(c->field), &v, &vn) ||
            ts_index_key_text(v, vn, key, sizeof key) < 0 || strcmp(key, c->value) != 0)
            return;
    }
    if (c->n == c->cap)
        c->rows = ts_grow(c->rows, &c->cap, sizeof *c->rows, 256);
    ts_okey_t k = {0};
    if (c->order && ts_json_text_field(d.text, d.len, c->order, strlen(c->order), &v, &vn))
        ts_okey_from_text(v, vn, &k);
    c->rows[c->n++] = (keyed_t){k, doc, d.id, d.id_len};
}

/* The index's order, so that a scan pages exactly as an index would. */
static int keyed_cmp(const void *a, const void *b)
{
    const keyed_t *x = a, *y = b;
    return ts_okey_id_cmp(&x->key, x->id, x->id_len, &y->key, y->id, y->id_len);
}

/* Narrows [pos, end) to what comes after the cursor's position in walking
 * order: (order key, id) above it ascending, below it descending. */
static void seek_cursor(sel_scan_t *s, const ts_cursor_t *c)
{
    size_t n = s->end - s->pos, at;
    if (s->entries) {
        at = ts_index_seek(s->idx, s->entries + s->pos, n, &c->key, c->id, c->id_len, !s->desc);
    } else {
        size_t lo = 0, hi = n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            const keyed_t *k = &s->keyed[s->pos + mid];
            int r = ts_okey_id_cmp(&k->key, k->id, k->id_len, &c->key, c->id, c->id_len);
            if (s->desc ? r < 0 : r <= 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        at = lo;
    }
    if (s->desc)
        s->end = s->pos + at;
    else
        s->pos += at;
}

/* Sizes the page: the top-level limit, within what the selector's limit
 * (declared, lowered by params.limit: a total over all pages) leaves after
 * the pages before. */
static void size_page(sel_scan_t *s, const ts_page_t *page, long total)
{
    long returned = page->has_cursor ? (long)page->cursor.returned : 0;
    long left = total > 0 ? total - returned : LONG_MAX;
    s->limit = page->limit < left ? page->limit : left;
    s->final = left <= page->limit;
    if (s->limit < 0)
        s->limit = 0;
}

/* Closes the answer: the cursor of the next page, or null. */
static int finish_page(const sel_scan_t *s, ts_page_t *page)
{
    ts_buf_t *b = s->out;
    int rc = ts_buf_puts(b, "],\"stale\":false,\"cursor\":");
    if (!s->more || !s->count)
        return rc | ts_buf_puts(b, "null}");
    const ts_okey_t *key = s->entries ? &s->entries[s->last]->order : &s->keyed[s->last].key;
    rc |= ts_page_append_cursor(b, page, s->count, key, s->last_id, s->last_id_len);
    return rc | ts_buf_puts(b, "}");
}

static void sq_query(ts_sq_t *self, ts_call_t *call, ts_sq_coll_t *c);

void ts_sq_query(ts_sq_t *self, ts_call_t *call, ts_sq_coll_t *c)
{
    int64_t t0 = ts_mono_us();
    sq_query(self, call, c);
    self->query_us += ts_mono_us() - t0;
}

void ts_sq_run(ts_sq_t *self, ts_call_t *call, ts_sq_coll_t *c, ts_cache_run_t *run)
{
    uint64_t reads = ts_policy_clock_reads(self->policy);
    self->read = &run->read;
    self->run = run->extend ? run : NULL;
    ts_sq_query(self, call, c);
    self->read = NULL;
    self->run = NULL;
    run->clock = ts_policy_clock_reads(self->policy) != reads;
}

static void set_bound(const ts_okey_t *k, uint8_t *kind, double *num, char **str, uint32_t *len)
{
    *kind = k->kind;
    *num = k->num;
    *len = k->len;
    *str = k->kind == TS_OKEY_STR ? ts_memdup(k->str ? k->str : "", k->len) : NULL;
}

/* What a run over an index bucket read: from its start (from, or the
 * bucket's end) to the last candidate it took when the limit stopped it,
 * else to the bucket's other end. */
static void record_range(ts_readset_t *r, const ts_sq_coll_t *c, const ts_policy_selector_t *sel,
                         const char *key, int klen, const ts_okey_t *from,
                         const sel_scan_t *s)
{
    r->kind = TS_READ_RANGE;
    r->field = ts_xstrdup(sel->index_field);
    r->order = sel->order_field ? ts_xstrdup(sel->order_field) : NULL;
    r->key = ts_memdup(key, (size_t)klen);
    r->lo_inf = r->hi_inf = true;
    /* The walk stopped before the bucket's end when it saw a match beyond
     * the page (a next page), or filled the selector's last page: what it
     * read ends at the candidate it saw last. (With a cursor, the range is
     * taken from the bucket's start: conservative.) */
    bool limited = s->entries && (s->more || (s->final && s->count >= s->limit));
    const ts_okey_t *last = limited ? &s->entries[s->cur]->order : NULL;
    const ts_okey_t *lo = sel->order_desc ? last : from, *hi = sel->order_desc ? from : last;
    if (!sel->order_field) { /* unordered: the whole bucket */
        (void)c;
        return;
    }
    if (lo) {
        r->lo_inf = false;
        set_bound(lo, &r->lo_kind, &r->lo_num, &r->lo_str, &r->lo_len);
    }
    if (hi) {
        r->hi_inf = false;
        set_bound(hi, &r->hi_kind, &r->hi_num, &r->hi_str, &r->hi_len);
    }
}

static void sq_query(ts_sq_t *self, ts_call_t *call, ts_sq_coll_t *c)
{
    const char *name = ts_json_string(call->params, "selector");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(call->params, "params");
    const ts_policy_selector_t *sel = ts_policy_selector_find(self->policy, name);
    if (!sel) {
        ts_call_fail(call, TS_E_POLICY, "no selector named '%.64s' in %s/selectors.lua", name,
                     self->dir);
        return;
    }
    if (!c || strcmp(sel->collection, c->name) != 0) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "selector '%s' is for collection '%s'", sel->name,
                     sel->collection);
        return;
    }
    ts_page_t page;
    if (ts_page_params(call, TS_PAGE_MAX, "named",
                       cJSON_GetObjectItemCaseSensitive(call->params, "selector"), params,
                       &page) != 0)
        return;
    char err[600];
    ts_policy_query_t *q = ts_policy_query_new(self->policy, name, params, err, sizeof err);
    if (!q) {
        ts_page_free(&page);
        ts_call_fail(call, TS_E_POLICY, "%s", err);
        return;
    }
    cJSON *from = NULL;
    if (ts_policy_query_from(q, &from, err, sizeof err) != TS_POLICY_OK) {
        ts_policy_query_destroy(&q);
        ts_page_free(&page);
        ts_call_fail(call, TS_E_POLICY, "%s", err);
        return;
    }
    self->queries++;
    ts_buf_t out = {0};
    sel_scan_t s = {.sq = self, .out = &out, .desc = sel->order_desc,
                    .order_field = sel->order_field};
    /* An extended run (for the cache) takes every match up to
     * TS_EXTEND_ROWS: the cache serves other bound values from them. */
    size_page(&s, &page, self->run ? TS_EXTEND_ROWS : ts_policy_selector_limit(sel, params));
    /* room for a typical page of documents: growing it costs reallocs */
    ts_buf_reserve(&out, (size_t)(s.limit < 64 ? s.limit : 64) * 512 + 64);
    ts_buf_puts(&out, "{\"items\":[");
    collect_t col = {.sq = self, .order = sel->order_field};
    char key[KEY_MAX];
    const cJSON *param = sel->index_field
                             ? cJSON_GetObjectItemCaseSensitive(params, sel->index_field)
                             : NULL;
    bool use_param = param && !cJSON_IsNull(param);
    int klen = use_param ? ts_index_key_json(param, key, sizeof key) : 0;
    ts_index_t *idx = use_param && klen >= 0 ? find_index(c, sel->index_field, sel->order_field)
                                             : NULL;
    if (use_param && klen >= 0 && !idx && !self->bulk) {
        ts_info(LOG, "%s: building the index on %s for selector %s (first use)", c->name,
                sel->index_field, sel->name);
        idx = build_index(c, sel->index_field, sel->order_field);
    }
    int rc = TS_POLICY_OK;
    if (use_param && klen < 0) {
        /* a value no index holds (null, object, array, over 1 KiB): matches nothing */
    } else if (idx) {
        s.idx = idx;
        s.end = ts_index_bucket(idx, key, (size_t)klen, &s.entries);
    } else {
        col.field = use_param ? sel->index_field : NULL;
        col.value = key;
        self->hooks.each(c->coll, collect_one, &col);
        /* sorted by id too when unordered: pages need one order */
        if (col.n > 1)
            qsort(col.rows, col.n, sizeof *col.rows, keyed_cmp);
        s.keyed = col.rows;
        s.end = col.n;
    }
    ts_okey_t fk = {0};
    if (from)
        ts_okey_from_json(from, &fk);
    if (rc == TS_POLICY_OK && from && sel->order_field && s.end) {
        /* Start at from: the first >= from (asc), or the last <= from (desc). */
        size_t lo = 0, hi = s.end;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            const ts_okey_t *k = s.entries ? &s.entries[mid]->order : &s.keyed[mid].key;
            int cmp = ts_okey_cmp(k, &fk);
            if (sel->order_desc ? cmp <= 0 : cmp < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (sel->order_desc)
            s.end = lo;
        else
            s.pos = lo;
    }
    if (page.has_cursor && s.pos < s.end)
        seek_cursor(&s, &page.cursor);
    if (rc == TS_POLICY_OK && s.pos < s.end && s.limit > 0)
        rc = ts_policy_query_scan(q, sel_next, sel_emit, &s, err, sizeof err);
    if (self->read && rc == TS_POLICY_OK) {
        if (use_param && klen < 0)
            self->read->kind = TS_READ_NOTHING;
        else if (idx)
            record_range(self->read, c, sel, key, klen,
                         from && sel->order_field && !page.has_cursor ? &fk : NULL, &s);
        else
            self->read->kind = TS_READ_ALL;
    }
    if (self->run)
        self->run->complete = !(s.more || (s.final && s.count >= s.limit));
    if (rc == TS_POLICY_OK && finish_page(&s, &page) != 0) {
        rc = TS_POLICY_ERROR;
        snprintf(err, sizeof err, "out of memory");
    }
    for (size_t i = 0; i < col.n; i++)
        free(col.rows[i].key.str);
    free(col.rows);
    cJSON_Delete(from);
    ts_policy_query_destroy(&q);
    ts_page_free(&page);
    if (rc != TS_POLICY_OK) {
        ts_buf_free(&out);
        ts_call_fail(call, TS_E_POLICY, "selector '%s': %s", sel->name, err);
        return;
    }
    ts_call_set_buffer(call, &out);
}

/* ---- reload and info ---- */

static cJSON *info_json(ts_sq_t *self, bool loaded)
{
    cJSON *info = ts_policy_info(self->policy);
    cJSON_AddBoolToObject(info, "loaded", loaded);
    if (self->last_error[0])
        cJSON_AddStringToObject(info, "error", self->last_error);
    cJSON_AddNumberToObject(info, "reloads", (double)self->reloads);
    cJSON_AddNumberToObject(info, "reload_failures", (double)self->reload_failures);
    cJSON_AddNumberToObject(info, "selector_queries", (double)self->queries);
    cJSON_AddNumberToObject(info, "selector_candidates", (double)self->candidates);
    cJSON_AddNumberToObject(info, "selector_us", (double)self->query_us);
    cJSON *idx = cJSON_AddArrayToObject(info, "indexes");
    for (size_t i = 0; i < self->ncolls; i++) {
        for (size_t k = 0; k < self->colls[i].nidx; k++) {
            const ts_index_t *x = self->colls[i].idx[k];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddItemToArray(idx, o);
            cJSON_AddStringToObject(o, "collection", self->colls[i].name);
            cJSON_AddStringToObject(o, "field", ts_index_field(x));
            if (ts_index_order_field(x))
                cJSON_AddStringToObject(o, "order_by", ts_index_order_field(x));
            cJSON_AddNumberToObject(o, "documents", (double)ts_index_size(x));
        }
    }
    return info;
}

/* "file.lua:12: message" → file and line, when the message has them. */
static void split_location(const char *err, char *file, size_t filelen, long *line)
{
    file[0] = '\0';
    *line = 0;
    const char *lua = strstr(err, ".lua:");
    if (!lua)
        return;
    const char *start = lua;
    while (start > err && start[-1] != ' ' && start[-1] != '/' && start[-1] != '\'' &&
           start[-1] != '"')
        start--;
    snprintf(file, filelen, "%.*s", (int)(lua + 4 - start), start);
    *line = strtol(lua + 5, NULL, 10);
}

char *ts_sq_reload(ts_sq_t *self, ts_call_t *call)
{
    char err[512];
    bool ok = ts_policy_reload(self->policy, self->dir, err, sizeof err) == 0;
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "jsonrpc", "2.0");
    cJSON_AddStringToObject(ev, "method", ok ? "policy.reloaded" : "policy.failed");
    cJSON *p = cJSON_AddObjectToObject(ev, "params");
    cJSON_AddStringToObject(p, "dir", self->dir);
    if (ok) {
        self->reloads++;
        self->last_error[0] = '\0';
        for (size_t i = 0; i < self->ncolls; i++)
            sync_indexes(&self->colls[i]);
        ts_info(LOG, "policies reloaded from %s", self->dir);
    } else {
        self->reload_failures++;
        snprintf(self->last_error, sizeof self->last_error, "%s", err);
        char file[128];
        long line;
        split_location(err, file, sizeof file, &line);
        cJSON_AddStringToObject(p, "error", err);
        if (file[0]) {
            cJSON_AddStringToObject(p, "file", file);
            cJSON_AddNumberToObject(p, "line", (double)line);
        }
        ts_warn(LOG, "policy reload refused, the old policies stay in force: %s", err);
    }
    char *text = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    if (!call)
        return text;
    cJSON *info = info_json(self, ok);
    if (!ok)
        cJSON_ReplaceItemInObject(info, "error", cJSON_CreateString(err));
    char *answer = cJSON_PrintUnformatted(info);
    cJSON_Delete(info);
    ts_call_set_result(call, answer, strlen(answer));
    return text;
}

void ts_sq_info(ts_sq_t *self, ts_call_t *call)
{
    cJSON *info = info_json(self, true);
    char *answer = cJSON_PrintUnformatted(info);
    cJSON_Delete(info);
    ts_call_set_result(call, answer, strlen(answer));
}

ts_selectors_t *ts_sq_selectors(ts_sq_t *self)
{
    ts_selectors_t *out = ts_xcalloc(1, sizeof *out);
    size_t n = ts_policy_selector_count(self->policy);
    out->selectors = ts_xcalloc(n ? n : 1, sizeof *out->selectors);
    for (size_t i = 0; i < n; i++) {
        const ts_policy_selector_t *s = ts_policy_selector_at(self->policy, i);
        ts_selector_info_t *o = &out->selectors[out->count++];
        o->name = ts_xstrdup(s->name);
        o->lower_bound = s->lower_bound ? ts_xstrdup(s->lower_bound) : NULL;
        o->index = s->index_field ? ts_xstrdup(s->index_field) : NULL;
        o->order = s->order_field ? ts_xstrdup(s->order_field) : NULL;
        o->limit = s->limit;
        o->collection = s->collection ? ts_xstrdup(s->collection) : NULL;
        o->fingerprint = s->fingerprint;
    }
    return out;
}

/* ---- membership, for the cache's patches ---- */

typedef struct {
    ts_policy_doc_t doc;
    bool given, matched;
} one_doc_t;

static int one_next(void *arg, ts_policy_doc_t *d)
{
    one_doc_t *o = arg;
    if (o->given)
        return 0;
    o->given = true;
    *d = o->doc;
    return 1;
}

static int one_emit(void *arg, const ts_policy_doc_t *d)
{
    (void)d;
    ((one_doc_t *)arg)->matched = true;
    return 1;
}

void ts_sq_membership(ts_sq_t *self, const char *collection, ts_change_t *ch)
{
    size_t n = ts_policy_selector_count(self->policy);
    for (size_t i = 0; i < n && i < 64; i++) {
        const ts_policy_selector_t *sel = ts_policy_selector_at(self->policy, i);
        if (!sel->lower_bound || !sel->index_field || !sel->order_field ||
            strcmp(sel->collection, collection) != 0)
            continue;
        ch->known |= 1ull << i;
        if (!ch->has_new)
            continue; /* gone: in no answer */
        const char *text = ts_change_new_text(ch), *iv, *ov;
        size_t len = ch->new_len, ivn, ovn;
        if (!ts_json_text_field(text, len, sel->index_field, strlen(sel->index_field), &iv,
                                &ivn) ||
            !ts_json_text_field(text, len, sel->order_field, strlen(sel->order_field), &ov, &ovn))
            continue; /* in no bucket, or before every bound: in no answer */
        /* where(doc, {index = its value, bound = its own order key}): true
         * when it is in the answer of every bound up to its key */
        cJSON *params = cJSON_CreateObject();
        cJSON_AddItemToObject(params, sel->index_field, cJSON_ParseWithLength(iv, ivn));
        cJSON_AddItemToObject(params, sel->lower_bound, cJSON_ParseWithLength(ov, ovn));
        char err[256];
        ts_policy_query_t *q = ts_policy_query_new(self->policy, sel->name, params, err,
                                                   sizeof err);
        one_doc_t one = {.doc = {.id = ch->data, .id_len = ch->id_len, .text = text,
                                 .len = len}};
        if (!q || ts_policy_query_scan(q, one_next, one_emit, &one, err, sizeof err) != 0)
            ch->known &= ~(1ull << i); /* unknown: the cache drops instead of patching */
        else if (one.matched)
            ch->match |= 1ull << i;
        ts_policy_query_destroy(&q);
        cJSON_Delete(params);
    }
}

int ts_store_check_policies(const ts_config_t *config, char *summary, size_t summary_len,
                            char *err, size_t errlen)
{
    ts_sq_hooks_t none = {0};
    ts_sq_t *sq = ts_sq_new(config, &none, err, errlen);
    if (!sq)
        return -1;
    ts_selectors_t *s = ts_sq_selectors(sq);
    snprintf(summary, summary_len, "%s (%zu selectors)", sq->dir, s->count);
    ts_selectors_free(s);
    ts_sq_destroy(&sq);
    return 0;
}
