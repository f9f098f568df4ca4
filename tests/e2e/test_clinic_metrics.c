/* test_clinic_metrics.c — clinic-api's /healthz and /metrics (docs/CLINIC_API.md,
 * Monitoring): requests by route and status, faults injected, feed
 * subscribers, in Prometheus text checked by tests/support/promcheck.py. */
#include "../support/clinic.h"
#include "../support/http.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static ts_clinic_t api;

static long get(const char *path, ts_http_resp_t *r)
{
    char url[128];
    snprintf(url, sizeof url, "%s%s", api.url, path);
    cr_assert_eq(ts_http("GET", url, NULL, NULL, 5000, r), 0, "GET %s: no answer", path);
    return r->status;
}

typedef struct {
    ts_http_resp_t metrics; /* /metrics while the stream was open */
} during_t;

static int scrape_once_open(const char *body, size_t len, void *arg)
{
    during_t *d = arg;
    if (!strstr(body, "stream open") || len == 0)
        return 0;
    get("/metrics", &d->metrics);
    return 1;
}

Test(clinic_metrics, healthz_and_metrics_count_routes_faults_and_feed, .timeout = 60)
{
    /* heartbeats often: a closed stream is seen at the next one */
    const char *flags[] = {"--heartbeat-ms", "200", NULL};
    cr_assert_eq(ts_clinic_start(&api, flags), 0);
    ts_http_resp_t r = {0};
    cr_assert_eq(get("/healthz", &r), 200, "%s", r.body);
    cr_assert_str_eq(r.body, "ok\n");
    ts_http_free(&r);

    cr_assert_eq(ts_clinic_call(&api, "POST", "/v1/sessions", "{\"id\":\"m1\"}", NULL), 201);
    cr_assert_eq(ts_clinic_call(&api, "GET", "/v1/sessions/m1", NULL, NULL), 200);
    cr_assert_eq(ts_clinic_call(&api, "GET", "/v1/sessions/m2", NULL, NULL), 404);
    cr_assert_eq(ts_clinic_faults(&api, "{\"fail_rate\":1,\"status\":503}"), 0);
    cr_assert_eq(ts_clinic_call(&api, "GET", "/v1/sessions/m1", NULL, NULL), 503);
    /* the operator's endpoints are never faulted */
    cr_assert_eq(get("/healthz", &r), 200);
    ts_http_free(&r);
    cr_assert_eq(ts_clinic_faults(&api, "{}"), 0);

    /* an event stream open while scraping: one subscriber */
    char url[160], auth[200];
    snprintf(url, sizeof url, "%s/v1/changes/stream", api.url);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", api.token);
    const char *h[] = {auth, NULL};
    during_t d = {0};
    ts_http_resp_t s = {0};
    cr_assert_eq(ts_http_stream(url, h, scrape_once_open, &d, 5000, &s), 0, "%s", s.body);
    ts_http_free(&s);
    cr_assert_eq(d.metrics.status, 200, "%s", d.metrics.body);
    cr_assert(strstr(d.metrics.body, "clinic_api_feed_subscribers{kind=\"stream\"} 1\n"), "%s",
              d.metrics.body);
    ts_http_free(&d.metrics);

    /* the stream's end is seen by the server at its next heartbeat */
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(get("/metrics", &r), 200);
        if (strstr(r.body, "clinic_api_feed_subscribers{kind=\"stream\"} 0\n"))
            break;
        ts_http_free(&r);
        usleep(100 * 1000);
    }
    char *type = ts_http_header(&r, "Content-Type");
    cr_assert(type && strstr(type, "version=0.0.4"), "%s", type ? type : "none");
    free(type);
    char out[4096];
    const char *const families[] = {"clinic_api_requests_total", "clinic_api_faults_injected_total",
                                    "clinic_api_feed_subscribers", NULL};
    cr_assert_eq(ts_promcheck(r.body, families, out, sizeof out), 0, "%s\n%s", out, r.body);
    const char *const want[] = {
        "clinic_api_requests_total{method=\"POST\",route=\"/v1/{collection}\",status=\"201\"} 1\n",
        "clinic_api_requests_total{method=\"GET\",route=\"/v1/{collection}/{id}\",status=\"200\"} 1\n",
        "clinic_api_requests_total{method=\"GET\",route=\"/v1/{collection}/{id}\",status=\"404\"} 1\n",
        "clinic_api_requests_total{method=\"GET\",route=\"/v1/{collection}/{id}\",status=\"503\"} 1\n",
        "clinic_api_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 2\n",
        "clinic_api_requests_total{method=\"GET\",route=\"/v1/changes/stream\",status=\"200\"} 1\n",
        "clinic_api_faults_injected_total{kind=\"failed\"} 1\n",
        "clinic_api_feed_subscribers{kind=\"stream\"} 0\n",
        "clinic_api_applied_writes_total 1\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        cr_assert(strstr(r.body, want[i]), "no %s in:\n%s", want[i], r.body);
    ts_http_free(&r);
    ts_clinic_destroy(&api);
}
