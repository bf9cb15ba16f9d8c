// Unit tests of core/deadline_list.h.
#include "core/deadline_list.h"

#include <gtest/gtest.h>

#include <vector>

using namespace ringrelay::core;

namespace {
struct item final : deadline_entry {
    int id;
    std::vector<int>* fired;
    item(int i, std::vector<int>* f) : id(i), fired(f) {}
    void on_deadline() noexcept override { fired->push_back(id); }
};
}  // namespace

TEST(DeadlineList, ExpiresOnlyPastDeadlinesOldestFirst) {
    std::vector<int> fired;
    deadline_list list(100);
    item a(1, &fired), b(2, &fired), c(3, &fired);
    list.touch(a, 0);
    list.touch(b, 10);
    list.touch(c, 20);
    list.expire(105);
    EXPECT_EQ(fired, (std::vector<int>{1}));
    list.expire(200);
    EXPECT_EQ(fired, (std::vector<int>{1, 2, 3}));
    EXPECT_TRUE(list.empty());
}

TEST(DeadlineList, TouchPostponesAnEntry) {
    std::vector<int> fired;
    deadline_list list(100);
    item a(1, &fired), b(2, &fired);
    list.touch(a, 0);
    list.touch(b, 10);
    list.touch(a, 50);  // activity: a now expires at 150
    list.expire(120);
    EXPECT_EQ(fired, (std::vector<int>{2}));
}

TEST(DeadlineList, DestroyedEntryUnlinksItself) {
    std::vector<int> fired;
    deadline_list list(100);
    item a(1, &fired);
    {
        item b(2, &fired);
        list.touch(b, 0);
        list.touch(a, 0);
    }
    list.expire(1000);
    EXPECT_EQ(fired, (std::vector<int>{1}));
}
