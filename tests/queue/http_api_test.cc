// tests/queue/http_api_test.cc: the HTTP endpoint's routes, access and /metrics (issue 18):
// queue::http_api answering requests from a peer, the shards' counters rendered.
#include "queue/http_api.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <gtest/gtest.h>

#include <string>

using namespace ringrelay;

namespace {

sockaddr_in peer(const char* address) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(40000);
    ::inet_pton(AF_INET, address, &a.sin_addr);
    return a;
}

struct api_fixture {
    api_fixture() : sources(2), api(config, sources) {
        config.http_cidrs.push_back(*core::parse_cidr("127.0.0.1/32"));
        sources.set(0, &shard0);
        sources.set(1, &shard1);
    }
    core::http_response call(core::http_method method, std::string target, const char* from = "127.0.0.1") {
        core::http_request request;
        request.method = method;
        request.target = std::move(target);
        const sockaddr_in p = peer(from);
        core::http_response response;
        api.handle(request, reinterpret_cast<const sockaddr*>(&p), response);
        return response;
    }
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
