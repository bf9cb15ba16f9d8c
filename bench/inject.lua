-- bench/inject.lua: wrk's request for bench/inject_wrk.sh: POST /api/v1/inject with a 2 KiB RFC 5322
-- message (headers + 25 lines of 76 characters, CRLF), one recipient. Every request is the same
-- body; the relay gives each its own queue id. wrk counts non-2xx answers itself.
local lines = {}
for i = 1, 25 do lines[#lines + 1] = string.rep(string.char(97 + (i % 26)), 76) end
local content = "From: bench@example.org\r\nTo: r@example.com\r\nSubject: wrk inject\r\n" ..
                "Message-ID: <wrk@example.org>\r\nDate: Tue, 08 Dec 2026 00:00:00 +0000\r\n\r\n" ..
                table.concat(lines, "\r\n") .. "\r\n"
local escaped = content:gsub("\r", "\\r"):gsub("\n", "\\n")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"envelope_sender": "bench@example.org", "recipients": [{"email": "r@example.com"}], "content": "' ..
           escaped .. '"}'
