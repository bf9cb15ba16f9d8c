// tests/queue/spool_fixture.h: the GoogleTest fixture spool_test and segment_index_test share:
// a temporary spool directory (removed after each test), the shard's io_uring reactor, a
// storage backend under the spools, spools opened on SPOOL/shard-0 as the shard does (a turn
// hook of the reactor until the test drops them), and a bounded loop until a waiter has its
// results.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/reactor.h"
#include "protocol/server_session.h"
#include "queue/spool.h"
#include "queue/storage.h"

namespace ringrelay::queue::testing {

// Records commit results; like the delivery scheduler, it holds the segment of every committed
// message (nothing here is ever delivered, so every segment stays).
struct holding_waiter final : commit_waiter {
    std::vector<protocol::commit_result> results;
    spool* owner = nullptr;
    void committed(protocol::commit_result r) noexcept override {
        results.push_back(r);
        if (r == protocol::commit_result::ok && owner != nullptr) owner->hold_segment(owner->committed_segment());
    }
};

// `Storage` is disk_storage or fault_storage; the temporary directory is
// /tmp/ringrelay-<name>-XXXXXX, `name` given by the test's fixture.
template <typename Storage>
class spool_fixture : public ::testing::Test {
protected:
    explicit spool_fixture(std::string name) : _name(std::move(name)) {}

    void SetUp() override {
        std::string tmpl = "/tmp/ringrelay-" + _name + "-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
        _dir = tmpl;
        _shard = _dir + "/shard-0";
        ASSERT_FALSE(_reactor.init(256, core::probe_kernel_features()));
        _storage = std::make_unique<Storage>(_reactor);
    }
    void TearDown() override { std::filesystem::remove_all(_dir); }

    // The spool unregisters from the reactor when the test drops it.
    struct unhook {
        core::reactor* r;
        void operator()(spool* s) const {
            r->remove_turn_hook(s);
            delete s;
        }
    };
    using spool_ptr = std::unique_ptr<spool, unhook>;

    spool_ptr open_spool(std::uint64_t segment_limit = 64u << 20) {
        spool_ptr s(new spool(_reactor, *_storage, _shard, segment_limit), unhook{&_reactor});
        auto report = s->open();
        EXPECT_TRUE(report.has_value()) << (report ? "" : report.error());
        _reactor.add_turn_hook(s.get());
        return s;
    }

    // Runs the loop until `w` has `n` results (bounded).
    void run_until(const holding_waiter& w, std::size_t n) {
        for (int i = 0; i < 1000 && w.results.size() < n; ++i) ASSERT_TRUE(_reactor.run_once(100));
        ASSERT_EQ(w.results.size(), n);
    }

    const std::string _name;
    std::string _dir;    // the spool
    std::string _shard;  // _dir + "/shard-0", where open_spool() opens it
    core::reactor _reactor;
    std::unique_ptr<Storage> _storage;
    std::vector<std::string> _bodies;  // kept alive while committing
};

}  // namespace ringrelay::queue::testing
