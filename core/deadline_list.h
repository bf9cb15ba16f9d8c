// core/deadline_list.h: per-connection deadlines when every deadline in the list has the
// same duration (the command timeout): touching an entry moves it to the tail, so the list
// stays sorted by deadline and expiry is O(expired). Intrusive: no allocation.
//
// Threading: shard-local. ~deadline_entry unlinks itself.
#pragma once
#include <cstdint>

namespace ringrelay::core {

class deadline_list;

class deadline_entry {
public:
    deadline_entry() = default;
    deadline_entry(const deadline_entry&) = delete;
    deadline_entry& operator=(const deadline_entry&) = delete;
    virtual ~deadline_entry() { unlink(); }

    [[nodiscard]] bool linked() const noexcept { return _list != nullptr; }
    [[nodiscard]] std::int64_t deadline() const noexcept { return _deadline; }
    inline void unlink() noexcept;

    // Called by deadline_list::expire() once the deadline passed; the entry is unlinked first.
    virtual void on_deadline() noexcept = 0;

private:
    friend class deadline_list;
    deadline_list* _list = nullptr;
    deadline_entry* _prev = nullptr;
    deadline_entry* _next = nullptr;
    std::int64_t _deadline = 0;
};

class deadline_list {
public:
    explicit deadline_list(std::int64_t duration_ms) : _duration(duration_ms) {}
    deadline_list(const deadline_list&) = delete;
    deadline_list& operator=(const deadline_list&) = delete;
    ~deadline_list() {
        while (_head != nullptr) _head->unlink();
    }

    // (Re)starts e's deadline at now + duration.
    void touch(deadline_entry& e, std::int64_t now_ms) noexcept {
        e.unlink();
        e._deadline = now_ms + _duration;
        e._list = this;
        e._prev = _tail;
        e._next = nullptr;
        if (_tail != nullptr) {
            _tail->_next = &e;
        } else {
            _head = &e;
        }
        _tail = &e;
    }

    // Calls on_deadline() for every entry whose deadline is <= now_ms, oldest first.
    void expire(std::int64_t now_ms) noexcept {
        while (_head != nullptr && _head->_deadline <= now_ms) {
            deadline_entry* e = _head;
            e->unlink();
            e->on_deadline();
        }
    }

    [[nodiscard]] bool empty() const noexcept { return _head == nullptr; }
    [[nodiscard]] std::int64_t duration() const noexcept { return _duration; }

private:
    friend class deadline_entry;
    const std::int64_t _duration;
    deadline_entry* _head = nullptr;
    deadline_entry* _tail = nullptr;
};

inline void deadline_entry::unlink() noexcept {
    if (_list == nullptr) return;
    if (_prev != nullptr) {
        _prev->_next = _next;
    } else {
        _list->_head = _next;
    }
    if (_next != nullptr) {
        _next->_prev = _prev;
    } else {
        _list->_tail = _prev;
    }
    _list = nullptr;
    _prev = _next = nullptr;
}

}  // namespace ringrelay::core
