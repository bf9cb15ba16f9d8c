// tests/queue/http_api_test.cc: the HTTP endpoint's routes, access and /metrics (issue 18):
// queue::http_api answering requests from a peer, the shards' counters rendered.
#include "queue/http_api.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

using namespace ringrelay;

namespace {

sockaddr_in peer(const char* address) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(40000);
    ::inet_pton(AF_INET, address, &a.sin_addr);
    return a;
}

// Keeps every request; the test reports for all shards (answer()).
struct fake_gateway final : queue::admin_gateway {
    void administer_all(std::shared_ptr<const queue::admin_request> request,
                        std::function<void(queue::admin_report&&)> done) noexcept override {
        requests.push_back(std::move(request));
        callbacks.push_back(std::move(done));
    }
    void answer(queue::admin_report report) {
        auto done = std::move(callbacks.back());
        callbacks.pop_back();
        done(std::move(report));
    }
    std::vector<std::shared_ptr<const queue::admin_request>> requests;
    std::vector<std::function<void(queue::admin_report&&)>> callbacks;
};

// Keeps each request the route hands over, and the caller's address; answers 200 at once.
struct fake_injector final : queue::inject_gateway {
    void inject(queue::inject_request&& request, const sockaddr* peer, core::http_answer& answer) noexcept override {
        requests.push_back(std::move(request));
        peers.push_back(core::address_text(peer));
        answer.response.body = "{}";
    }
    std::vector<queue::inject_request> requests;
    std::vector<std::string> peers;
};

struct api_fixture {
    api_fixture() : sources(2), api(config, sources, &gateway, &drain, &injector) {
        config.http_cidrs.push_back(*core::parse_cidr("127.0.0.1/32"));
        sources.set(0, &shard0);
        sources.set(1, &shard1);
    }
    // The answer at once; a deferred answer is kept in `pending` (response then empty).
    core::http_response call(core::http_method method, std::string target, const char* from = "127.0.0.1",
                             std::string body = {}) {
        core::http_request request;
        request.method = method;
        request.target = std::move(target);
        request.body = std::move(body);
        const sockaddr_in p = peer(from);
        pending.emplace();
        api.handle(request, reinterpret_cast<const sockaddr*>(&p), *pending);
        if (pending->deferred()) return {};
        return pending->response;
    }
    fake_gateway gateway;
    fake_injector injector;
    std::atomic<bool> drain{false};
    std::optional<core::http_answer> pending;
    core::config config;
    queue::shard_counters shard0;
    queue::shard_counters shard1;
    queue::metrics_sources sources;
    queue::http_api api;
};

}  // namespace

TEST(HttpApi, ServesMetricsOfEveryShard) {
    api_fixture f;
    f.shard0.messages_queued = 3;
    f.shard1.messages_queued = 4;
    f.shard1.delivered = 9;
    const auto r = f.call(core::http_method::get, "/metrics");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, queue::metrics_content_type);
    EXPECT_NE(r.body.find("# TYPE ringrelay_messages_received_total counter\n"), std::string::npos);
    EXPECT_NE(r.body.find("ringrelay_messages_received_total{shard=\"0\"} 3\n"), std::string::npos);
    EXPECT_NE(r.body.find("ringrelay_messages_received_total{shard=\"1\"} 4\n"), std::string::npos);
    EXPECT_NE(r.body.find("ringrelay_messages_delivered_total{shard=\"1\"} 9\n"), std::string::npos);
}

TEST(HttpApi, AnswersHeadLikeGet) {
    api_fixture f;
    EXPECT_EQ(f.call(core::http_method::head, "/metrics?x=1").status, 200);
}

TEST(HttpApi, RefusesAnotherMethodWithAllow) {
    api_fixture f;
    const auto r = f.call(core::http_method::post, "/metrics");
    EXPECT_EQ(r.status, 405);
    EXPECT_EQ(r.allow, "GET, HEAD");
    EXPECT_EQ(r.body, "{\"error\": \"method not allowed\"}\n");
    EXPECT_EQ(f.call(core::http_method::get, "/api/v1/flush").allow, "POST");  // issue 18
}

TEST(HttpApi, AnswersUnknownPathsWith404) {
    api_fixture f;
    const auto r = f.call(core::http_method::get, "/nothing");
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(r.content_type, "application/json");
}

TEST(HttpApi, ForbidsClientsOutsideTheNetworks) {
    api_fixture f;
    EXPECT_EQ(f.call(core::http_method::get, "/metrics", "127.0.0.2").status, 403);
    // Nor does a stranger learn which paths exist, or which methods they take.
    EXPECT_EQ(f.call(core::http_method::get, "/nothing", "127.0.0.2").status, 403);
    EXPECT_EQ(f.call(core::http_method::post, "/metrics", "127.0.0.2").status, 403);
}

// Issue 18: the status page (GET /) and its script and style, with no caching and a
// Content-Security-Policy of 'self' only; the same callers as the API.
TEST(HttpApi, ServesTheStatusPageWithItsPolicy) {
    api_fixture f;
    const auto page = f.call(core::http_method::get, "/");
    EXPECT_EQ(page.status, 200);
    EXPECT_EQ(page.content_type, "text/html; charset=utf-8");
    EXPECT_NE(page.body.find("<script src=\"/status/status.js\""), std::string::npos);
    const auto script = f.call(core::http_method::get, "/status/status.js?v=1");
    EXPECT_EQ(script.status, 200);
    EXPECT_EQ(script.content_type, "text/javascript; charset=utf-8");
    EXPECT_NE(script.body.find("/api/v1/queue"), std::string::npos);
    EXPECT_EQ(f.call(core::http_method::get, "/status/status.css").content_type, "text/css; charset=utf-8");
    EXPECT_EQ(f.call(core::http_method::get, "/status/icon.svg").content_type, "image/svg+xml");
    std::string out;
    core::append_http_response(out, page, true, false);
    EXPECT_NE(out.find("\r\nCache-Control: no-store\r\n"), std::string::npos);
    EXPECT_NE(out.find("\r\nContent-Security-Policy: default-src 'self'; "), std::string::npos);
    EXPECT_NE(out.find("\r\nConnection: keep-alive\r\n\r\n<!DOCTYPE html>"), std::string::npos);
    EXPECT_EQ(f.call(core::http_method::head, "/").status, 200);
    EXPECT_EQ(f.call(core::http_method::post, "/").status, 405);
    EXPECT_EQ(f.call(core::http_method::get, "/", "127.0.0.2").status, 403);
    // "/" is a page, not a prefix: other paths are still unknown.
    EXPECT_EQ(f.call(core::http_method::get, "/status.html").status, 404);
    EXPECT_EQ(f.call(core::http_method::get, "/status/nothing.js").status, 404);
}

// Issue 18: the queue control API.
TEST(HttpApi, ForbidsTheQueueApiOutsideTheNetworks) {
    api_fixture f;
    EXPECT_EQ(f.call(core::http_method::get, "/api/v1/queue", "127.0.0.2").status, 403);
    EXPECT_EQ(f.call(core::http_method::post, "/api/v1/suspend", "127.0.0.2", R"({"site": "a", "duration": "1h"})").status,
              403);
    EXPECT_TRUE(f.gateway.requests.empty());
}

TEST(HttpApi, AnswersABadBodyWith400NamingTheField) {
    api_fixture f;
    const auto r = f.call(core::http_method::post, "/api/v1/suspend", "127.0.0.1", R"({"site": "a", "duration": "1x"})");
    EXPECT_EQ(r.status, 400);
    EXPECT_NE(r.body.find("\\\"duration\\\": not a duration"), std::string::npos) << r.body;
    EXPECT_TRUE(f.gateway.requests.empty());
}

TEST(HttpApi, AnswersASuspensionOnceEveryShardReported) {
    api_fixture f;
    (void)f.call(core::http_method::post, "/api/v1/suspend", "127.0.0.1", R"({"domain": "Example.ORG", "duration": "90m"})");
    ASSERT_TRUE(f.pending->deferred());
    EXPECT_EQ(f.pending->given(), nullptr);
    ASSERT_EQ(f.gateway.requests.size(), 1u);
    const queue::admin_request& req = *f.gateway.requests[0];
    EXPECT_EQ(req.action, queue::admin_action::suspend);
    EXPECT_EQ(req.selector, queue::admin_selector::domain);
    EXPECT_EQ(req.value, "example.org");
    EXPECT_EQ(req.duration_us, 90ull * 60 * 1'000'000);
    queue::admin_report report;
    report.messages = 3;
    f.gateway.answer(std::move(report));
    const core::http_response* r = f.pending->given();
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->status, 200);
    EXPECT_TRUE(r->body.starts_with(R"({"suspended": {"domain": "example.org"}, "until": ")")) << r->body;
    EXPECT_NE(r->body.find(R"("messages": 3})"), std::string::npos) << r->body;
}

TEST(HttpApi, TakesTheQueueIdFromThePath) {
    api_fixture f;
    EXPECT_EQ(f.call(core::http_method::get, "/api/v1/messages/XYZ").status, 400);
    EXPECT_EQ(f.call(core::http_method::get, "/api/v1/messages/").status, 404);
    (void)f.call(core::http_method::get, "/api/v1/messages/00000000000000AB");
    ASSERT_EQ(f.gateway.requests.size(), 1u);
    EXPECT_EQ(f.gateway.requests[0]->action, queue::admin_action::message);
    EXPECT_EQ(f.gateway.requests[0]->queue_id, 0xABu);
    f.gateway.answer({});  // no shard has it
    ASSERT_NE(f.pending->given(), nullptr);
    EXPECT_EQ(f.pending->given()->status, 404);
    EXPECT_EQ(f.pending->given()->body, "{\"error\": \"no message 00000000000000AB in the queue\"}\n");
}

// POST /api/v1/drain sets the relay's drain request (the shards and the main thread act on it).
TEST(HttpApi, DrainSetsTheRelaysRequestOnce) {
    api_fixture f;
    EXPECT_EQ(f.call(core::http_method::post, "/api/v1/drain", "127.0.0.2").status, 403);
    EXPECT_FALSE(f.drain.load());
    EXPECT_EQ(f.call(core::http_method::get, "/api/v1/drain").status, 405);
    const auto bad = f.call(core::http_method::post, "/api/v1/drain", "127.0.0.1", R"({"now": true})");
    EXPECT_EQ(bad.status, 400);
    EXPECT_FALSE(f.drain.load());
    const auto first = f.call(core::http_method::post, "/api/v1/drain", "127.0.0.1", " {}\r\n");
    EXPECT_EQ(first.status, 200);
    EXPECT_EQ(first.body, "{\"draining\":true,\"already\":false}\n");
    EXPECT_TRUE(f.drain.load());
    EXPECT_EQ(f.call(core::http_method::post, "/api/v1/drain").body, "{\"draining\":true,\"already\":true}\n");
}

TEST(HttpApi, DrainWithoutARelayIs503) {
    api_fixture f;
    queue::http_api alone(f.config, f.sources);
    core::http_request request;
    request.method = core::http_method::post;
    request.target = "/api/v1/drain";
    const sockaddr_in p = peer("127.0.0.1");
    core::http_answer answer;
    alone.handle(request, reinterpret_cast<const sockaddr*>(&p), answer);
    EXPECT_EQ(answer.response.status, 503);
}

// POST /api/v1/inject (issue 18): the body is checked here (400 naming the field), then the
// request and the caller's address go to the shard's injector.
TEST(HttpApi, HandsAnInjectionToTheInjectorOnceItsBodyParsed) {
    api_fixture f;
    const std::string body = R"({"envelope_sender": "a@example.org", "recipients": [{"email": "b@example.net"}], "content": "A: b"})";
    const auto bad = f.call(core::http_method::post, "/api/v1/inject", "127.0.0.1", R"({"envelope_sender": "a@example.org"})");
    EXPECT_EQ(bad.status, 400);
    EXPECT_EQ(bad.body, "{\"error\": \"\\\"recipients\\\" is required\"}\n");
    EXPECT_EQ(f.call(core::http_method::post, "/api/v1/inject", "127.0.0.2", body).status, 403);
    EXPECT_EQ(f.call(core::http_method::get, "/api/v1/inject").status, 405);
    EXPECT_TRUE(f.injector.requests.empty());
    EXPECT_EQ(f.call(core::http_method::post, "/api/v1/inject", "127.0.0.1", body).status, 200);
    ASSERT_EQ(f.injector.requests.size(), 1u);
    EXPECT_EQ(f.injector.requests[0].recipients, std::vector<std::string>{"b@example.net"});
    EXPECT_EQ(f.injector.peers[0], "127.0.0.1");
}

TEST(HttpApi, InjectionWithoutAnInjectorIs503) {
    core::config config;
    config.http_cidrs.push_back(*core::parse_cidr("127.0.0.1/32"));
    queue::metrics_sources sources(1);
    queue::http_api api(config, sources);
    core::http_request request;
    request.method = core::http_method::post;
    request.target = "/api/v1/inject";
    request.body = R"({"envelope_sender": "", "recipients": [{"email": "b@example.net"}], "content": "A: b"})";
    const sockaddr_in p = peer("127.0.0.1");
    core::http_answer answer;
    api.handle(request, reinterpret_cast<const sockaddr*>(&p), answer);
    EXPECT_EQ(answer.response.status, 503);
}

// Issue 18: who may call a route open to authenticated strangers (POST /api/v1/inject), and the
// Basic check deferred to the password checks (a fake here: the test gives the verdict).
namespace {

struct fake_checks final : queue::http_password_checks {
    void check(core::basic_credentials&& credentials, const sockaddr*,
               std::function<void(queue::http_check_verdict)> done) noexcept override {
        users.push_back(credentials.user);
        passwords.push_back(credentials.password);
        callbacks.push_back(std::move(done));
    }
    void malformed(const sockaddr*) noexcept override { ++malformed_count; }
    void give(queue::http_check_verdict v) {
        auto done = std::move(callbacks.front());
        callbacks.erase(callbacks.begin());
        done(v);
    }
    std::vector<std::string> users;
    std::vector<std::string> passwords;
    std::vector<std::function<void(queue::http_check_verdict)>> callbacks;
    int malformed_count = 0;
};

constexpr const char* alice_basic = "Basic YWxpY2U6c2VjcmV0";  // alice:secret

struct auth_fixture {
    auth_fixture() : sources(1), api(config, sources, nullptr, nullptr, &injector, &checks, &counters) {
        config.http_cidrs.push_back(*core::parse_cidr("127.0.0.1/32"));
        sources.set(0, &counters);
    }
    static core::http_request request(core::http_method method, std::string target, core::http_transport transport,
                                      std::string authorization) {
        core::http_request r;
        r.method = method;
        r.target = std::move(target);
        r.transport = transport;
        r.authorization = std::move(authorization);
        return r;
    }
    core::http_response call(const core::http_request& r, const char* from) {
        const sockaddr_in p = peer(from);
        pending.emplace();
        api.handle(r, reinterpret_cast<const sockaddr*>(&p), *pending);
        if (pending->deferred()) return {};
        return pending->response;
    }
    queue::http_access access(queue::http_callers callers, core::http_transport transport, std::string authorization,
                              const char* from) {
        const sockaddr_in p = peer(from);
        return api.access(callers, request(core::http_method::post, "/", transport, std::move(authorization)),
                          reinterpret_cast<const sockaddr*>(&p));
    }
    fake_checks checks;
    fake_injector injector;
    std::optional<core::http_answer> pending;
    core::config config;
    queue::shard_counters counters;
    queue::metrics_sources sources;
    queue::http_api api;
};

constexpr auto tls = core::http_transport::tls;
constexpr auto plain = core::http_transport::plain;

}  // namespace

TEST(HttpApiAccess, NetworksCallEverythingOverEitherTransport) {
    auth_fixture f;
    for (const auto callers : {queue::http_callers::networks, queue::http_callers::networks_or_authenticated})
        for (const auto transport : {plain, tls}) {
            EXPECT_EQ(f.access(callers, transport, "", "127.0.0.1"), queue::http_access::allowed);
            EXPECT_EQ(f.access(callers, transport, "Bearer x", "127.0.0.1"), queue::http_access::allowed);
        }
}

TEST(HttpApiAccess, NetworkClientsWithBasicCredentialsAreCheckedWhereARouteTakesThem) {
    auth_fixture f;
    // Served as the user (its tenant) on a route that takes credentials; elsewhere ignored.
    for (const auto transport : {plain, tls}) {
        EXPECT_EQ(f.access(queue::http_callers::networks_or_authenticated, transport, alice_basic, "127.0.0.1"),
                  queue::http_access::check_password);
        EXPECT_EQ(f.access(queue::http_callers::networks, transport, alice_basic, "127.0.0.1"),
                  queue::http_access::allowed);
        EXPECT_EQ(f.access(queue::http_callers::networks_or_authenticated, transport, "Basic !!", "127.0.0.1"),
                  queue::http_access::allowed);
    }
}

TEST(HttpApiAccess, StrangersNeverCallANetworksRoute) {
    auth_fixture f;
    for (const auto transport : {plain, tls})
        EXPECT_EQ(f.access(queue::http_callers::networks, transport, alice_basic, "192.0.2.1"),
                  queue::http_access::forbidden);
}

TEST(HttpApiAccess, StrangersNeedTlsAndCredentialsForAnAuthenticatedRoute) {
    auth_fixture f;
    const auto route = queue::http_callers::networks_or_authenticated;
    EXPECT_EQ(f.access(route, plain, alice_basic, "192.0.2.1"), queue::http_access::forbidden);
    EXPECT_EQ(f.access(route, plain, "", "192.0.2.1"), queue::http_access::forbidden);
    EXPECT_EQ(f.access(route, tls, "", "192.0.2.1"), queue::http_access::unauthenticated);
    EXPECT_EQ(f.access(route, tls, "Basic !!", "192.0.2.1"), queue::http_access::unauthenticated);
    EXPECT_EQ(f.access(route, tls, "Basic YWxpY2U=", "192.0.2.1"), queue::http_access::unauthenticated);  // no colon
    EXPECT_EQ(f.access(route, tls, "Bearer abc", "192.0.2.1"), queue::http_access::unauthenticated);
    EXPECT_EQ(f.access(route, tls, alice_basic, "192.0.2.1"), queue::http_access::check_password);
}

TEST(HttpApiAccess, WithoutAuthUsersStrangersAreForbidden) {
    core::config config;
    config.http_cidrs.push_back(*core::parse_cidr("127.0.0.1/32"));
    queue::metrics_sources sources(0);
    queue::http_api api(config, sources);  // no password checks: no --auth-users
    const sockaddr_in p = peer("192.0.2.1");
    core::http_request r = auth_fixture::request(core::http_method::post, "/api/v1/inject", tls, alice_basic);
    EXPECT_EQ(api.access(queue::http_callers::networks_or_authenticated, r, reinterpret_cast<const sockaddr*>(&p)),
              queue::http_access::forbidden);
}

TEST(HttpApiBasic, MissingCredentialsGet401WithAChallenge) {
    auth_fixture f;
    const auto r = f.call(auth_fixture::request(core::http_method::post, "/api/v1/inject", tls, ""), "192.0.2.1");
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(r.www_authenticate.rfind("Basic realm=\"ringrelay\"", 0), 0u) << r.www_authenticate;
    EXPECT_TRUE(f.checks.users.empty());
    EXPECT_EQ(f.checks.malformed_count, 0) << "no credentials is not a failed attempt";
}

TEST(HttpApiBasic, MalformedCredentialsGet401AndCountAsAFailure) {
    auth_fixture f;
    const auto r = f.call(auth_fixture::request(core::http_method::post, "/api/v1/inject", tls, "Basic !!"), "192.0.2.1");
    EXPECT_EQ(r.status, 401);
    EXPECT_FALSE(r.www_authenticate.empty());
    EXPECT_TRUE(f.checks.users.empty()) << "no password check for what does not parse";
    EXPECT_EQ(f.checks.malformed_count, 1);
}

TEST(HttpApiBasic, StrangersOverPlainHttpGet403WhateverTheySend) {
    auth_fixture f;
    const auto r = f.call(auth_fixture::request(core::http_method::post, "/api/v1/inject", plain, alice_basic), "192.0.2.1");
    EXPECT_EQ(r.status, 403);
    EXPECT_TRUE(r.www_authenticate.empty());
    EXPECT_TRUE(f.checks.users.empty());
}

TEST(HttpApiBasic, CredentialsDoNotOpenANetworksRoute) {
    auth_fixture f;
    const auto r = f.call(auth_fixture::request(core::http_method::get, "/metrics", tls, alice_basic), "192.0.2.1");
    EXPECT_EQ(r.status, 403);
    EXPECT_TRUE(f.checks.users.empty());
}

TEST(HttpApiBasic, TheRightPasswordRunsTheHandlerAfterTheCheck) {
    auth_fixture f;
    core::http_request r = auth_fixture::request(core::http_method::post, "/api/v1/inject", tls, alice_basic);
    r.body = R"({"envelope_sender": "a@example.org", "recipients": [{"email": "b@example.net"}], "content": "A: b"})";
    (void)f.call(r, "192.0.2.1");
    ASSERT_TRUE(f.pending->deferred()) << "answered before the password was checked";
    ASSERT_EQ(f.checks.users.size(), 1u);
    EXPECT_EQ(f.checks.users[0], "alice");
    EXPECT_EQ(f.checks.passwords[0], "secret");
    EXPECT_EQ(f.pending->given(), nullptr);
    f.checks.give(queue::http_check_verdict::ok);
    ASSERT_NE(f.pending->given(), nullptr);
    EXPECT_EQ(f.pending->given()->status, 200);
    // The injector got the request from the caller's address, as the user the check passed (its
    // tenant, and allowed to relay, as with SMTP AUTH).
    ASSERT_EQ(f.injector.requests.size(), 1u);
    EXPECT_EQ(f.injector.requests[0].auth_user, "alice");
    EXPECT_EQ(f.injector.peers[0], "192.0.2.1");
}

TEST(HttpApiBasic, VerdictsMapToStatuses) {
    const std::pair<queue::http_check_verdict, unsigned> cases[] = {
        {queue::http_check_verdict::failed, 401},
        {queue::http_check_verdict::throttled, 429},
        {queue::http_check_verdict::busy, 503},
    };
    for (const auto& [verdict, status] : cases) {
        auth_fixture f;
        (void)f.call(auth_fixture::request(core::http_method::post, "/api/v1/inject", tls, alice_basic), "192.0.2.1");
        ASSERT_TRUE(f.pending->deferred());
        f.checks.give(verdict);
        ASSERT_NE(f.pending->given(), nullptr);
        EXPECT_EQ(f.pending->given()->status, status);
        EXPECT_EQ(!f.pending->given()->www_authenticate.empty(), status == 401) << status;
    }
}

TEST(HttpApiBasic, AWrongMethodIs405BeforeAnyCheck) {
    auth_fixture f;
    const auto r = f.call(auth_fixture::request(core::http_method::get, "/api/v1/inject", tls, alice_basic), "192.0.2.1");
    EXPECT_EQ(r.status, 405);
    EXPECT_TRUE(f.checks.users.empty());
}

TEST(HttpApiBasic, NetworksCallTheAuthenticatedRouteWithoutACheck) {
    auth_fixture f;
    const auto r = f.call(auth_fixture::request(core::http_method::post, "/api/v1/inject", plain, ""), "127.0.0.1");
    EXPECT_FALSE(f.pending->deferred());
    EXPECT_EQ(f.injector.requests.size(), 0u) << "the empty body is refused (400) before the injector";
    EXPECT_NE(r.status, 401);
    EXPECT_NE(r.status, 403);
    EXPECT_TRUE(f.checks.users.empty());
}

TEST(HttpApi, CountsHttpsHandshakesWithSmtps) {
    auth_fixture f;
    f.api.tls_handshake(core::http_tls_outcome::completed);
    f.api.tls_handshake(core::http_tls_outcome::failed);
    f.api.tls_handshake(core::http_tls_outcome::failed);
    EXPECT_EQ(f.counters.tls_handshakes.load(), 1u);
    EXPECT_EQ(f.counters.tls_failures.load(), 2u);
}
