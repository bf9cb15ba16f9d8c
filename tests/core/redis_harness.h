// tests/core/redis_harness.h: a real redis-server for the tests of the shared limits (issue 19):
// started by the test on a free 127.0.0.1 port and a unix socket in a temporary directory, no
// persistence, stopped by PID (SIGKILL: Redis gone as after a crash); start() again brings it
// back on the same port. start() is false when redis-server is not installed (the test skips).
#pragma once
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

extern char** environ;

namespace ringrelay::redis_test {

inline std::uint16_t free_port() {
    const int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    std::uint16_t port = 0;
    if (bind(t, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        getsockname(t, reinterpret_cast<sockaddr*>(&a), &len) == 0)
        port = ntohs(a.sin_port);
    close(t);
    return port;
}

inline bool can_connect(std::uint16_t port) {
    const int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    const bool ok = ::connect(t, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    close(t);
    return ok;
}

// One redis-server, no persistence, on 127.0.0.1:port and DIR/redis.sock.
class redis_server {
public:
    bool start() {
        if (access("/usr/bin/redis-server", X_OK) != 0) return false;
        if (_dir.empty()) {
            char tmpl[] = "/tmp/rr-redis-test-XXXXXX";
            if (mkdtemp(tmpl) == nullptr) return false;
            _dir = tmpl;
            _port = free_port();
        }
        std::vector<std::string> args = {"/usr/bin/redis-server", "--port", std::to_string(_port), "--bind", "127.0.0.1",
                                         "--unixsocket", socket_path(), "--save", "", "--appendonly", "no",
                                         "--dir", _dir, "--logfile", _dir + "/redis.log", "--daemonize", "no"};
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        if (posix_spawn(&_pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return false;
        for (int i = 0; i < 500; ++i) {  // up to 5 s for it to listen
            if (can_connect(_port)) return true;
            usleep(10'000);
        }
        return false;
    }
    void stop() {
        if (_pid <= 0) return;
        kill(_pid, SIGKILL);
        waitpid(_pid, nullptr, 0);
        _pid = -1;
    }
    ~redis_server() {
        stop();
        if (!_dir.empty()) std::filesystem::remove_all(_dir);
    }
    [[nodiscard]] std::uint16_t port() const { return _port; }
    [[nodiscard]] std::string socket_path() const { return _dir + "/redis.sock"; }
    // A blocking side channel (hiredis's synchronous API) to look at what the client did.
    [[nodiscard]] std::string get(const std::string& key, int db = 0) const {
        redisContext* c = redisConnect("127.0.0.1", _port);
        if (c == nullptr || c->err) return "<no connection>";
        freeReplyObject(redisCommand(c, "SELECT %d", db));
        auto* r = static_cast<redisReply*>(redisCommand(c, "GET %s", key.c_str()));
        std::string out = r == nullptr ? "<no reply>" : r->type == REDIS_REPLY_NIL ? "<nil>" : std::string(r->str, r->len);
        freeReplyObject(r);
        redisFree(c);
        return out;
    }

private:
    std::string _dir;
    std::uint16_t _port = 0;
    pid_t _pid = -1;
};

}  // namespace ringrelay::redis_test
