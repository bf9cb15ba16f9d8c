// tests/core/fixed_buffer_pool_test.cc: core/fixed_buffer_pool.h on a real io_uring (the
// reactor's pool): every buffer acquired until none is left, release and reuse, a READ_FIXED
// into an acquired buffer (the registration is real: the kernel reads into it by index), and
// the kernel refusing the registration (a ring that has buffers already: EBUSY; a user without
// CAP_IPC_LOCK over RLIMIT_MEMLOCK: ENOMEM, in a child process) leaves an empty pool whose
// acquire() fails, so that callers use plain memory; under a limit that fits fewer buffers,
// the pool takes fewer.
#include "core/fixed_buffer_pool.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "core/reactor.h"

namespace ringrelay::core {
namespace {

struct read_done final : completion {
    int res = 1;  // 1: not completed yet
    void complete(int r, std::uint32_t) noexcept override { res = r; }
};

class FixedBufferPool : public ::testing::Test {
protected:
    void SetUp() override { ASSERT_FALSE(ring.init(8, kernel_features{})); }
    reactor ring;
};

TEST_F(FixedBufferPool, AcquiresEveryBufferOnceThenNoneUntilOneIsReleased) {
    fixed_buffer_pool& pool = ring.fixed_buffers();
    ASSERT_FALSE(pool.init(ring.ring(), 4, 8192));
    EXPECT_EQ(pool.capacity(), 4U);
    EXPECT_EQ(pool.buffer_size(), 8192U);
    std::set<std::uint16_t> indexes;
    std::set<char*> addresses;
    fixed_buffer held[4];
    for (fixed_buffer& b : held) {
        b = pool.acquire();
        ASSERT_TRUE(b);
        indexes.insert(b.index);
        addresses.insert(b.data);
        std::memset(b.data, 'x', pool.buffer_size());  // the whole buffer is the caller's
    }
    EXPECT_EQ(indexes.size(), 4U);
    EXPECT_EQ(addresses.size(), 4U);
    EXPECT_EQ(pool.available(), 0U);
    EXPECT_FALSE(pool.acquire()) << "every buffer is out";
    EXPECT_EQ(pool.counters().exhausted, 1U);
    EXPECT_EQ(pool.counters().acquired, 4U);
    pool.release(held[2]);
    EXPECT_EQ(pool.available(), 1U);
    const fixed_buffer again = pool.acquire();
    ASSERT_TRUE(again) << "a released buffer is acquired again";
    EXPECT_EQ(again.index, held[2].index);
    EXPECT_EQ(again.data, held[2].data);
    for (int i = 0; i < 4; ++i) pool.release(i == 2 ? again : held[i]);
    EXPECT_EQ(pool.available(), 4U);
}

TEST_F(FixedBufferPool, TheKernelReadsAFileIntoAnAcquiredBufferByItsIndex) {
    fixed_buffer_pool& pool = ring.fixed_buffers();
    ASSERT_FALSE(pool.init(ring.ring(), 3, 4096));
    char path[] = "/tmp/ringrelay-fixed-XXXXXX";
    const int fd = ::mkstemp(path);
    ASSERT_GE(fd, 0);
    ::unlink(path);
    std::string text;
    for (int i = 0; text.size() < 10'000; ++i) text += "line " + std::to_string(i) + "\r\n";
    ASSERT_EQ(::pwrite(fd, text.data(), text.size(), 0), static_cast<ssize_t>(text.size()));
    (void)pool.acquire();
    const fixed_buffer b = pool.acquire();  // not the first: the index must be the right one
    ASSERT_TRUE(b);
    read_done done;
    io_uring_prep_read_fixed(ring.sqe(&done), fd, b.data, 4096, 5000, b.index);
    for (int i = 0; i < 100 && done.res == 1; ++i) ASSERT_TRUE(ring.run_once(100));
    ::close(fd);
    ASSERT_EQ(done.res, 4096) << (done.res < 0 ? std::strerror(-done.res) : "short");
    EXPECT_EQ(std::string(b.data, 4096), text.substr(5000, 4096));
}

// A read beyond the buffer it names is refused by the kernel (-EFAULT): the index and the
// address must agree, which is what makes the registration worth checking at all.
TEST_F(FixedBufferPool, AReadPastItsRegisteredBufferIsRefused) {
    fixed_buffer_pool& pool = ring.fixed_buffers();
    ASSERT_FALSE(pool.init(ring.ring(), 2, 4096));
    const fixed_buffer b = pool.acquire();
    ASSERT_TRUE(b);
    const int fd = ::open("/dev/zero", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    read_done done;
    io_uring_prep_read_fixed(ring.sqe(&done), fd, b.data, 8192, 0, b.index);
    for (int i = 0; i < 100 && done.res == 1; ++i) ASSERT_TRUE(ring.run_once(100));
    ::close(fd);
    EXPECT_EQ(done.res, -EFAULT);
}

TEST_F(FixedBufferPool, ARefusedRegistrationLeavesAnEmptyPoolWhoseAcquireFails) {
    // The ring has a buffer table already: the kernel refuses another (EBUSY).
    std::vector<char> other(4096);  // never read into: only its registration matters
    iovec one{other.data(), other.size()};
    ASSERT_EQ(io_uring_register_buffers(&ring.ring(), &one, 1), 0);
    fixed_buffer_pool& pool = ring.fixed_buffers();
    const std::error_code refused = pool.init(ring.ring(), 4, 4096);
    EXPECT_EQ(refused, std::error_code(EBUSY, std::system_category())) << refused.message();
    EXPECT_EQ(pool.capacity(), 0U);
    EXPECT_EQ(pool.available(), 0U);
    EXPECT_FALSE(pool.acquire());
    EXPECT_FALSE(pool.acquire());
    EXPECT_EQ(pool.counters().exhausted, 2U);
    EXPECT_EQ(pool.counters().acquired, 0U);
}

// Without CAP_IPC_LOCK, registered memory counts against RLIMIT_MEMLOCK (io_uring/rsrc.c,
// io_account_mem; on recent kernels the ring's own memory too: seen on 6.18). In a child: CAP_IPC_LOCK
// dropped, the ring made under a 256 KiB limit, then the limit set to `limit` and 4 buffers
// of 1 MiB asked for. Exit status: the buffers registered (0 to 4), or 10+ for a step that
// failed (13: the ring does not fit even 256 KiB, 14: the request was not refused).
constexpr int ring_does_not_fit = 13;

int registered_under_memlock(rlim_t limit) {
    const pid_t pid = ::fork();
    if (pid < 0) return 100;
    if (pid == 0) {
        __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
        __user_cap_data_struct data[2]{};
        if (::syscall(SYS_capget, &header, data) != 0) ::_exit(10);
        data[CAP_IPC_LOCK / 32].effective &= ~(1U << (CAP_IPC_LOCK % 32));
        data[CAP_IPC_LOCK / 32].permitted &= ~(1U << (CAP_IPC_LOCK % 32));
        if (::syscall(SYS_capset, &header, data) != 0) ::_exit(11);
        rlimit l{256 << 10, RLIM_INFINITY};
        if (::getrlimit(RLIMIT_MEMLOCK, &l) == 0) l.rlim_cur = 256 << 10;
        if (::setrlimit(RLIMIT_MEMLOCK, &l) != 0) ::_exit(12);
        reactor r;
        if (r.init(8, kernel_features{})) ::_exit(ring_does_not_fit);
        l.rlim_cur = limit;
        if (::setrlimit(RLIMIT_MEMLOCK, &l) != 0) ::_exit(12);
        fixed_buffer_pool& pool = r.fixed_buffers();
        const std::error_code refused = pool.init(r.ring(), 4, 1 << 20);
        if (refused != std::error_code(ENOMEM, std::system_category())) ::_exit(14);
        unsigned got = 0;
        while (pool.acquire()) ++got;
        ::_exit(got == pool.capacity() ? static_cast<int>(got) : 15);
    }
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return 101;
    return WEXITSTATUS(status);
}

TEST(FixedBufferPoolMemlock, AUserOverItsLimitGetsAnEmptyPool) {
    const int got = registered_under_memlock(256 << 10);  // not even one 1 MiB buffer
    if (got == ring_does_not_fit) GTEST_SKIP() << "a ring does not fit in 256 KiB of RLIMIT_MEMLOCK here";
    EXPECT_EQ(got, 0);
}

TEST(FixedBufferPoolMemlock, AUserUnderATightLimitGetsFewerBuffersNotNone) {
    // 4 MiB and 2 MiB are refused, 1 MiB fits beside the ring (at most 256 KiB).
    const int got = registered_under_memlock((256 << 10) + (1536 << 10));
    if (got == ring_does_not_fit) GTEST_SKIP() << "a ring does not fit in 256 KiB of RLIMIT_MEMLOCK here";
    EXPECT_EQ(got, 1);
}

}  // namespace
}  // namespace ringrelay::core
