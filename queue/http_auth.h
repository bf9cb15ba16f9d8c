// queue/http_auth.h: the shard's checks of HTTP Basic credentials (issue 18: POST
// /api/v1/inject from clients outside --http-networks, over --http-tls; queue/http_api.h decides
// who must be checked). The same machinery as SMTP AUTH (queue/auth.h): the password is checked
// by an auth_check on the relay's work pool (never on the shard thread: scrypt is slow on
// purpose), the address's failures and checks in flight (auth_failures, --auth-max-failures-per-ip
// within --auth-failure-window) and the user name's pacing (user_failures) apply across SMTP and
// HTTP alike, a check that finds no room waits in the shard's auth_wait_queue, and the shard's
// AUTH counters (ringrelay_auth_*) count HTTP attempts too. What differs from SMTP: no delay
// after a failure (each request is on its own; the address limit still holds), and the answers
// are HTTP's (queue/http_api.h: 401, 429, 503).
//
// Lifecycle: made by the shard with its http_api, destroyed with it after the shard's work
// return is idle (no check in flight then). Each check is owned here from check() until its
// verdict was given; checks already answered are freed at the next check() or verdict.
// Threading: the shard's thread only (the pool runs auth_check::run()).
// SECURITY: credentials come from the network; the password is wiped once copied into the check,
// and by the check once hashed.
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "queue/auth.h"
#include "queue/http_api.h"

namespace ringrelay::queue {

class shard;

class http_basic_auth final : public http_password_checks {
public:
    // `host` has --auth-users (shard::auth() not null) and outlives this.
    explicit http_basic_auth(shard& host) noexcept;
    http_basic_auth(const http_basic_auth&) = delete;
    http_basic_auth& operator=(const http_basic_auth&) = delete;
    ~http_basic_auth();

    void check(core::basic_credentials&& credentials, const sockaddr* peer,
               std::function<void(http_check_verdict)> done) noexcept override;
    void malformed(const sockaddr* peer) noexcept override;

    // Checks waiting or in flight (tests, metrics).
    [[nodiscard]] std::size_t pending() const noexcept { return _checks.size() - _answered.size(); }

private:
    class pending_check;
    void retire(pending_check& c) noexcept;
    void bury() noexcept;

    shard& _host;
    std::vector<std::unique_ptr<pending_check>> _checks;  // waiting, in flight, or answered
    std::vector<pending_check*> _answered;                // freed at the next bury()
};

}  // namespace ringrelay::queue
