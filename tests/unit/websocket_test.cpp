// tests/unit/websocket_test.cpp -- the WebSocket session, driven by Beast's client over loopback
// SPDX-License-Identifier: BSL-1.0
#include <cserve/cserve.hpp>

#include "catch.hpp"
#include "test_server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>

#include <any>
#include <chrono>
#include <cstdint>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace {

namespace ct = cserve_test;
namespace ws = cserve::websocket;
namespace http = cserve::http;
namespace net = boost::asio;
namespace beast = boost::beast;
namespace bws = boost::beast::websocket;
namespace bhttp = boost::beast::http;
using cserve::task;
using ct::ms;
using clock_type = std::chrono::steady_clock;

// The independent client: Beast's websocket stream over a plain TCP socket.
using ws_stream = bws::stream<ct::tcp::socket>;

// The config of these tests: ct::test_config() without the lifespan protocol, so that the
// applications below are called for WebSocket (and HTTP) scopes only.
cserve::config
ws_config()
{
    auto cfg = ct::test_config();
    return cfg;
}

//------------------------------------------------------------------------------
// Client side

struct handshake_result {
    beast::error_code ec;
    bws::response_type res; // the 101, or the HTTP response that declined the upgrade

    bool ok() const noexcept { return !ec; }
    int status() const noexcept { return static_cast<int>(res.result_int()); }
    std::string header(std::string_view name) const { return ct::field(res, name); }
    bool has(std::string_view name) const { return res.count(beast::string_view(name.data(), name.size())) > 0; }
};

struct client_options {
    std::string protocols; // Sec-WebSocket-Protocol, sent when not empty
    bool deflate = false;  // offer permessage-deflate
};

// Connects to 127.0.0.1:port and performs the opening handshake for `target`.
task<handshake_result>
ws_connect(ws_stream& s, unsigned short port, std::string target, client_options opt = {})
{
    handshake_result r;
    auto [cec] = co_await s.next_layer().async_connect(
        ct::tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ct::use_tuple);
    if (cec) {
        r.ec = cec;
        co_return r;
    }
    // The handshake timeout also bounds the client's closing handshake.
    bws::stream_base::timeout t{};
    t.handshake_timeout = std::chrono::seconds(3);
    t.idle_timeout = bws::stream_base::none();
    t.keep_alive_pings = false;
    s.set_option(t);
    if (!opt.protocols.empty())
        s.set_option(bws::stream_base::decorator(
            [p = opt.protocols](bws::request_type& req) { req.set(bhttp::field::sec_websocket_protocol, p); }));
    bws::permessage_deflate pmd;
    pmd.client_enable = opt.deflate;
    s.set_option(pmd);
    std::string host = "127.0.0.1:" + std::to_string(port);
    auto [ec] = co_await s.async_handshake(r.res, host, target, ct::use_tuple);
    r.ec = ec;
    co_return r;
}

// One read: a message, or the close frame (ec == closed), or another error.
struct ws_message {
    beast::error_code ec;
    std::string data;
    bool text = false;
    int close_code = -1; // the code of the server's close frame, when one was read
    std::string close_reason;
    bool timed_out = false;

    bool closed() const noexcept { return ec == bws::error::closed; }
};

task<ws_message>
ws_read(ws_stream& s, ms limit = ms(3000))
{
    ws_message m;
    beast::flat_buffer b;
    ct::socket_deadline d(s.next_layer(), limit);
    auto [ec, n] = co_await s.async_read(b, ct::use_tuple);
    m.ec = ec;
    m.timed_out = d.fired();
    if (!ec) {
        m.data = beast::buffers_to_string(b.data());
        m.text = s.got_text();
    } else if (ec == bws::error::closed || s.reason().code != bws::close_code::none) {
        // Beast keeps the code of a close frame it read even when what follows fails
        // (such as its own teardown after the server reset the connection).
        m.close_code = static_cast<int>(s.reason().code);
        m.close_reason.assign(s.reason().reason.data(), s.reason().reason.size());
    }
    co_return m;
}

task<beast::error_code>
ws_write(ws_stream& s, std::string data, bool text)
{
    s.text(text);
    auto [ec, n] = co_await s.async_write(net::buffer(data), ct::use_tuple);
    co_return ec;
}

task<beast::error_code>
ws_close(ws_stream& s, bws::close_reason cr)
{
    ct::socket_deadline d(s.next_layer(), ms(3000));
    auto [ec] = co_await s.async_close(cr, ct::use_tuple);
    co_return ec;
}

//------------------------------------------------------------------------------
// Application side

// What an application saw of one WebSocket connection.
struct ws_record {
    std::vector<ws::receive> messages;
    std::optional<ws::disconnect> disconnect;
    std::string failure; // an exception that escaped send() or receive()
};

// Receives until websocket.disconnect, recording (and when `echo`, echoing) every message.
task<>
receive_all(cserve::receive receive, cserve::send send, ws_record& rec, bool echo)
{
    for (;;) {
        auto e = co_await receive();
        if (auto* d = std::get_if<ws::disconnect>(&e)) {
            rec.disconnect = *d;
            co_return;
        }
        auto* m = std::get_if<ws::receive>(&e);
        if (!m) {
            rec.failure = "unexpected event " + std::string(cserve::event_name(e));
            co_return;
        }
        rec.messages.push_back(*m);
        if (echo)
            co_await send(ws::send{.bytes = m->bytes, .text = m->text});
    }
}

// Accepts, then echoes every message until the client leaves.
task<>
accept_and_echo(cserve::send send, cserve::receive receive, ws_record& rec)
{
    co_await receive(); // websocket.connect
    co_await send(ws::accept{});
    try {
        co_await receive_all(receive, send, rec, true);
    } catch (std::exception const& e) {
        rec.failure = e.what();
    }
}

// A lifespan that puts "answer" = 42 into the state.
task<>
lifespan_with_state(cserve::scope& scope, cserve::receive receive, cserve::send send)
{
    for (;;) {
        auto e = co_await receive();
        if (std::holds_alternative<cserve::lifespan::startup>(e)) {
            scope.state["answer"] = 42;
            co_await send(cserve::lifespan::startup_complete{});
        } else {
            co_await send(cserve::lifespan::shutdown_complete{});
            co_return;
        }
    }
}

std::string
payload(std::size_t n, char seed = 'a')
{
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i)
        s[i] = static_cast<char>(seed + i % 26);
    return s;
}

} // namespace

//------------------------------------------------------------------------------
// The scope and the opening handshake

TEST_CASE("websocket: the scope says websocket and ws, with path, query, subprotocols in order and the "
          "http.response extension, and the first event is websocket.connect",
          "[websocket][scope]")
{
    struct {
        bool called = false;
        cserve::scope_type type = cserve::scope_type::http;
        std::string scheme, path, raw_path, query, method, http_version;
        std::vector<std::string> subprotocols;
        bool has_http_response = false;
        std::optional<std::string> upgrade_header;
        std::string first_event;
        std::optional<int> state_answer;
        std::optional<std::uint16_t> client_port;
    } seen;
    auto app = [&](cserve::scope& scope, cserve::receive receive, cserve::send send) -> task<> {
        if (scope.type == cserve::scope_type::lifespan) {
            co_await lifespan_with_state(scope, receive, send);
            co_return;
        }
        seen.called = true;
        seen.type = scope.type;
        seen.scheme = scope.scheme;
        seen.path = scope.path;
        seen.raw_path = scope.raw_path;
        seen.query = scope.query_string;
        seen.method = scope.method;
        seen.http_version = scope.http_version;
        for (auto p : scope.subprotocols)
            seen.subprotocols.emplace_back(p);
        seen.has_http_response = scope.has_extension("websocket.http.response");
        if (auto u = scope.header("upgrade"))
            seen.upgrade_header = std::string(*u);
        if (auto it = scope.state.find("answer"); it != scope.state.end())
            if (auto const* v = std::any_cast<int>(&it->second))
                seen.state_answer = *v;
        if (scope.client)
            seen.client_port = scope.client->port;
        auto e = co_await receive();
        seen.first_event = cserve::event_name(e);
        co_await send(ws::accept{.subprotocol = "b"});
        co_await send(ws::close{});
    };
    handshake_result hs;
    ws_message closing;
    std::uint16_t local_port = 0;
    // The lifespan runs here (unlike ws_config()): its state must reach the scope.
    auto cfg = ct::test_config();
    cfg.lifespan = cserve::lifespan_mode::automatic;
    auto r = ct::run_server(app, cfg, [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        hs = co_await ws_connect(s, port, "/chat/r%20oom?x=1&y=2", {.protocols = "a, b"});
        local_port = s.next_layer().local_endpoint().port();
        if (hs.ok())
            closing = co_await ws_read(s);
    });
    CSERVE_REQUIRE_RUN(r);
    INFO(hs.ec.message());
    REQUIRE(hs.ok());
    REQUIRE(seen.called);
    CHECK(seen.type == cserve::scope_type::websocket);
    CHECK(seen.scheme == "ws");
    CHECK(seen.path == "/chat/r oom");
    CHECK(seen.raw_path == "/chat/r%20oom");
    CHECK(seen.query == "x=1&y=2");
    CHECK(seen.method == "GET");
    CHECK(seen.http_version == "1.1");
    CHECK(seen.subprotocols == std::vector<std::string>{"a", "b"});
    CHECK(seen.has_http_response);
    CHECK(seen.upgrade_header == std::optional<std::string>("websocket"));
    CHECK(seen.first_event == "websocket.connect");
    CHECK(seen.state_answer == std::optional<int>(42)); // lifespan state reaches WebSocket scopes too
    CHECK(seen.client_port == std::optional<std::uint16_t>(local_port));
    CHECK(hs.header("sec-websocket-protocol") == "b");
    CHECK(closing.closed());
    CHECK(closing.close_code == 1000);
}

TEST_CASE("websocket: accept's subprotocol and headers are in the 101 response, with server: cserve",
          "[websocket][handshake]")
{
    auto cfg = ws_config();
    cfg.access_log = true;
    cfg.headers.push_back({"x-served-by", "config"});
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await receive();
        co_await send(ws::accept{.subprotocol = "b", .headers = {{"x-extra", "yes"}}});
        co_await send(ws::close{});
    };
    handshake_result hs;
    ws_message closing;
    auto r = ct::run_server(app, cfg, [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        hs = co_await ws_connect(s, port, "/sub?q=1", {.protocols = "a, b"});
        if (hs.ok())
            closing = co_await ws_read(s);
    });
    CSERVE_REQUIRE_RUN(r);
    INFO(hs.ec.message());
    REQUIRE(hs.ok());
    CHECK(hs.status() == 101);
    CHECK(hs.header("sec-websocket-protocol") == "b");
    CHECK(hs.header("x-extra") == "yes");
    CHECK(hs.header("server") == "cserve");
    CHECK(hs.header("x-served-by") == "config"); // config::headers go on every response
    CHECK(hs.has("sec-websocket-accept"));
    CHECK(hs.has("date"));
    CHECK(closing.closed());
    CHECK(r.logged("\"WebSocket /sub?q=1\" [accepted]"));
}

TEST_CASE("websocket: without a subprotocol in accept the 101 response names none", "[websocket][handshake]")
{
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await receive();
        co_await send(ws::accept{});
        co_await send(ws::close{});
    };
    handshake_result hs;
    auto r = ct::run_server(app, ws_config(), [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        hs = co_await ws_connect(s, port, "/", {.protocols = "a, b"});
        if (hs.ok())
            co_await ws_read(s);
    });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(hs.ok());
    CHECK_FALSE(hs.has("sec-websocket-protocol"));
}

//------------------------------------------------------------------------------
// Messages

TEST_CASE("websocket: text and binary messages echo, and fragmented messages arrive whole, text as text, bytes as bytes",
          "[websocket][messages]")
{
    ws_record rec;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await accept_and_echo(send, receive, rec);
    };
    std::vector<ws_message> echoes;
    std::vector<beast::error_code> write_errors;
    beast::error_code close_ec;
    std::string const binary("\x00\x01\xfe\xff zero", 9);
    // "é" (C3 A9) is split between two fragments: still valid UTF-8 as a whole.
    std::vector<std::string> const text_fragments{"frag\xC3", "\xA9-mented", " text"};
    std::vector<std::string> const binary_fragments{std::string("\x00\x80", 2), std::string(300, '\xC3'), "end"};
    auto r = ct::run_server(app, ws_config(), [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        auto hs = co_await ws_connect(s, port, "/echo");
        if (!hs.ok())
            throw boost::system::system_error(hs.ec, "handshake");
        write_errors.push_back(co_await ws_write(s, "hello", true));
        echoes.push_back(co_await ws_read(s));
        write_errors.push_back(co_await ws_write(s, binary, false));
        echoes.push_back(co_await ws_read(s));

        // Explicit fragmentation: async_write_some(fin, ...) sends one frame each.
        for (bool text : {true, false}) {
            auto const& frags = text ? text_fragments : binary_fragments;
            s.text(text);
            for (std::size_t i = 0; i < frags.size(); ++i) {
                auto [ec, n] = co_await s.async_write_some(i + 1 == frags.size(), net::buffer(frags[i]), ct::use_tuple);
                write_errors.push_back(ec);
            }
            echoes.push_back(co_await ws_read(s));
        }
        close_ec = co_await ws_close(s, bws::close_code::normal);
    });
    CSERVE_REQUIRE_RUN(r);
    for (auto const& ec : write_errors)
        CHECK_FALSE(ec);
    CHECK_FALSE(close_ec);
    CHECK(rec.failure.empty());

    std::string const whole_text = "frag\xC3\xA9-mented text";
    std::string const whole_binary = binary_fragments[0] + binary_fragments[1] + binary_fragments[2];

    // What the application received: exactly four messages, of the right kind.
    REQUIRE(rec.messages.size() == 4);
    CHECK(rec.messages[0].text == std::optional<std::string>("hello"));
    CHECK_FALSE(rec.messages[0].bytes);
    CHECK(rec.messages[1].bytes == std::optional<std::string>(binary));
    CHECK_FALSE(rec.messages[1].text);
    CHECK(rec.messages[2].text == std::optional<std::string>(whole_text));
    CHECK_FALSE(rec.messages[2].bytes);
    CHECK(rec.messages[3].bytes == std::optional<std::string>(whole_binary));
    CHECK_FALSE(rec.messages[3].text);
    REQUIRE(rec.disconnect);
    CHECK(rec.disconnect->code == 1000);

    // What came back.
    REQUIRE(echoes.size() == 4);
    for (auto const& e : echoes)
        CHECK_FALSE(e.ec);
    CHECK(echoes[0].text);
    CHECK(echoes[0].data == "hello");
    CHECK_FALSE(echoes[1].text);
    CHECK(echoes[1].data == binary);
    CHECK(echoes[2].text);
    CHECK(echoes[2].data == whole_text);
    CHECK_FALSE(echoes[3].text);
    CHECK(echoes[3].data == whole_binary);
}

TEST_CASE("websocket: invalid UTF-8 in a text message closes with 1007 and the app gets disconnect 1007",
          "[websocket][messages][utf8]")
{
    ws_record rec;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await accept_and_echo(send, receive, rec);
    };
    beast::error_code write_ec;
    ws_message reply;
    auto r = ct::run_server(app, ws_config(), [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        auto hs = co_await ws_connect(s, port, "/");
        if (!hs.ok())
            throw boost::system::system_error(hs.ec, "handshake");
        // Beast validates UTF-8 only on reading, so its client sends this as it is.
        write_ec = co_await ws_write(s, "\xC3\x28", true);
        reply = co_await ws_read(s);
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK_FALSE(write_ec);
    INFO("client read: " << reply.ec.message());
    CHECK(reply.closed());
    CHECK(reply.close_code == 1007);
    CHECK(rec.messages.empty());
    REQUIRE(rec.disconnect);
    CHECK(rec.disconnect->code == 1007);
}

TEST_CASE("websocket: a protocol error found by Beast closes with 1002 and the app gets disconnect 1002",
          "[websocket][messages]")
{
    // A message's first fragment, then a binary frame where its continuation belongs (RFC
    // 6455 §5.4). Beast reads fragmented messages and fails the connection with 1002; the
    // application is told the same code (as it is when cserve's own reader finds the error).
    ws_record rec;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await accept_and_echo(send, receive, rec);
    };
    beast::error_code write_ec;
    ws_message reply;
    auto r = ct::run_server(app, ws_config(), [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        auto hs = co_await ws_connect(s, port, "/");
        if (!hs.ok())
            throw boost::system::system_error(hs.ec, "handshake");
        // Masked with a zero key: the payload reads as it is.
        static constexpr char frames[] = "\x01\x82\0\0\0\0ab" // text, no FIN, "ab"
                                         "\x82\x81\0\0\0\0c";   // binary, FIN: not a continuation
        auto [ec, n] = co_await net::async_write(s.next_layer(), net::buffer(frames, sizeof frames - 1), ct::use_tuple);
        write_ec = ec;
        reply = co_await ws_read(s);
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK_FALSE(write_ec);
    INFO("client read: " << reply.ec.message());
    CHECK(reply.closed());
    CHECK(reply.close_code == 1002);
    CHECK(rec.messages.empty());
    REQUIRE(rec.disconnect);
    CHECK(rec.disconnect->code == 1002);
}

TEST_CASE("websocket: a message over ws_max_size closes with 1009 and the app gets disconnect 1009",
          "[websocket][messages][limits]")
{
    auto cfg = ws_config();
    cfg.ws_max_size = 1024;
    ws_record rec;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await accept_and_echo(send, receive, rec);
    };
    bool fragmented = false;
    SECTION("in one frame") {}
    SECTION("in fragments that are each under the limit") { fragmented = true; }
    beast::error_code write_ec;
    ws_message at_limit, reply;
    auto r = ct::run_server(app, cfg, [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        auto hs = co_await ws_connect(s, port, "/");
        if (!hs.ok())
            throw boost::system::system_error(hs.ec, "handshake");
        // Exactly the limit is fine.
        write_ec = co_await ws_write(s, payload(1024), false);
        at_limit = co_await ws_read(s);
        s.binary(true);
        if (fragmented) {
            for (int i = 0; i < 4; ++i) {
                auto piece = payload(500);
                auto [ec, n] = co_await s.async_write_some(i == 3, net::buffer(piece), ct::use_tuple);
                if (ec)
                    break; // the server may already have failed the connection
            }
        } else {
            co_await ws_write(s, payload(2000), false);
        }
        reply = co_await ws_read(s);
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK_FALSE(write_ec);
    CHECK_FALSE(at_limit.ec);
    CHECK(at_limit.data == payload(1024));
    // The close frame arrives. (With unread input on the server side, as here in the
    // single-frame case, Beast's async_teardown closes the socket after its first read, so
    // the client's close reply meets a reset and Beast's client reports ENOTCONN from its
    // own teardown instead of `closed`; the close frame itself is what matters here.)
    INFO("client read: " << reply.ec.message());
    CHECK(reply.ec);
    CHECK(reply.close_code == 1009);
    REQUIRE(rec.messages.size() == 1);
    REQUIRE(rec.disconnect);
    CHECK(rec.disconnect->code == 1009);
}

//------------------------------------------------------------------------------
// Closing

TEST_CASE("websocket: the app's close code and reason reach the client", "[websocket][close]")
{
    std::optional<std::string> close_failure;
    std::optional<cserve::event> after_close;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await receive();
        co_await send(ws::accept{});
        try {
            co_await send(ws::close{.code = 4001, .reason = "bye"});
            close_failure = "";
            after_close = co_await receive();
        } catch (std::exception const& e) {
            close_failure = e.what();
        }
    };
    ws_message reply;
    auto r = ct::run_server(app, ws_config(), [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        auto hs = co_await ws_connect(s, port, "/");
        if (!hs.ok())
            throw boost::system::system_error(hs.ec, "handshake");
        reply = co_await ws_read(s);
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(close_failure == std::optional<std::string>(""));
    INFO("client read: " << reply.ec.message());
    CHECK(reply.closed());
    CHECK(reply.close_code == 4001);
    CHECK(reply.close_reason == "bye");
    // Afterwards receive() says the connection is closed, with the code of the closing
    // handshake (ASGI: websocket.disconnect carries the close code; uvicorn gives 4001 here).
    REQUIRE(after_close);
    auto const* d = std::get_if<ws::disconnect>(&*after_close);
    REQUIRE(d != nullptr);
    CHECK(d->code == 4001);
}

TEST_CASE("websocket: a close code or reason that may not go on the wire makes send() throw and the client gets 1011",
          "[websocket][close]")
{
    // RFC 6455 §7.4: 1000-1003, 1007-1014 and 3000-4999; §5.5: at most 123 bytes of UTF-8.
    auto const row = GENERATE(table<int, std::string, bool>({
        {999, "", false},
        {1004, "", false},
        {1005, "", false},
        {1006, "", false},
        {1015, "", false},
        {2000, "", false},
        {5000, "", false},
        {66536, "", false},
        {1000, std::string(124, 'r'), false},
        {4000, "\xC3\x28", false},
        {1013, "", true}, // 1014 too, but Beast 1.81's client counts it as reserved
        {3000, std::string(123, 'r'), true},
    }));
    int const code = std::get<0>(row);
    std::string const reason = std::get<1>(row);
    bool const valid = std::get<2>(row);
    std::optional<std::string> failure;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await receive();
        co_await send(ws::accept{});
        try {
            co_await send(ws::close{.code = code, .reason = reason});
            failure = "";
        } catch (boost::system::system_error const& e) {
            failure = e.code() == cserve::make_error_code(cserve::error::invalid_close) ? "invalid_close" : e.what();
            throw;
        }
    };
    ws_message reply;
    auto r = ct::run_server(app, ws_config(), [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        auto hs = co_await ws_connect(s, port, "/");
        if (!hs.ok())
            throw boost::system::system_error(hs.ec, "handshake");
        reply = co_await ws_read(s);
    });
    CSERVE_REQUIRE_RUN(r);
    INFO("code " << code << ", reason of " << reason.size() << " bytes; client read: " << reply.ec.message());
    CHECK(failure == std::optional<std::string>(valid ? "" : "invalid_close"));
    CHECK(reply.close_code == (valid ? code : 1011));
    if (valid)
        CHECK(reply.close_reason == reason);
}

TEST_CASE("websocket: the client's close code and reason reach the app, and send() after it throws client_disconnected",
          "[websocket][close]")
{
    ws_record rec;
    bool threw_client_disconnected = false;
    std::string other_failure;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await receive();
        co_await send(ws::accept{});
        co_await receive_all(receive, send, rec, false);
        try {
            co_await send(ws::send{.text = "too late"});
            other_failure = "send() after disconnect completed";
        } catch (cserve::client_disconnected const&) {
            threw_client_disconnected = true;
        } catch (std::exception const& e) {
            other_failure = e.what();
        }
    };
    beast::error_code close_ec;
    auto r = ct::run_server(app, ws_config(), [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        auto hs = co_await ws_connect(s, port, "/");
        if (!hs.ok())
            throw boost::system::system_error(hs.ec, "handshake");
        close_ec = co_await ws_close(s, bws::close_reason(static_cast<bws::close_code>(4002), "later"));
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK_FALSE(close_ec);
    REQUIRE(rec.disconnect);
    CHECK(rec.disconnect->code == 4002);
    CHECK(rec.disconnect->reason == "later");
    CHECK(threw_client_disconnected);
    CHECK(other_failure.empty());
}

TEST_CASE("websocket: a close frame without a status code reaches the app as disconnect 1005",
          "[websocket][close]")
{
    ws_record rec;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await receive();
        co_await send(ws::accept{});
        co_await receive_all(receive, send, rec, false);
    };
    beast::error_code close_ec;
    auto r = ct::run_server(app, ws_config(), [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        auto hs = co_await ws_connect(s, port, "/");
        if (!hs.ok())
            throw boost::system::system_error(hs.ec, "handshake");
        // close_code::none: Beast sends a close frame with an empty payload.
        close_ec = co_await ws_close(s, bws::close_reason{});
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK_FALSE(close_ec);
    REQUIRE(rec.disconnect);
    CHECK(rec.disconnect->code == 1005); // event.hpp: "1005 when the peer gave no code"
    CHECK(rec.disconnect->reason.empty());
}

//------------------------------------------------------------------------------
// Outcomes of the handshake, decided by the application

namespace {

// Behaves as its path says: /close, /deny, /deny-101, /deny-throw, /return, /throw,
// /accept-return, /accept-throw.
task<>
outcome_app(cserve::scope& scope, cserve::receive receive, cserve::send send)
{
    std::string path = scope.path;
    co_await receive(); // websocket.connect
    if (path == "/close") {
        co_await send(ws::close{});
    } else if (path == "/deny") {
        co_await send(http::response_start{
            .status = 401,
            .headers = {{"content-type", "text/plain"}, {"content-length", "6"}},
        });
        co_await send(http::response_body{.body = "denied"});
    } else if (path == "/deny-101") {
        co_await send(http::response_start{.status = 101}); // not a final status: throws
    } else if (path == "/deny-throw") {
        co_await send(http::response_start{.status = 401, .headers = {{"content-length", "6"}}});
        throw std::runtime_error("failed while denying");
    } else if (path == "/return") {
        co_return;
    } else if (path == "/throw") {
        throw std::runtime_error("failed before accepting");
    } else if (path == "/accept-return") {
        co_await send(ws::accept{});
        co_return;
    } else if (path == "/accept-throw") {
        co_await send(ws::accept{});
        throw std::runtime_error("failed after accepting");
    }
}

struct outcome {
    handshake_result hs;
    ws_message next; // after a successful handshake: the first read
};

// Runs one connection to `target` against outcome_app.
ct::run_result
run_outcome(std::string target, outcome& out, cserve::config cfg = ws_config())
{
    return ct::run_server(outcome_app, std::move(cfg), [&out, target](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        out.hs = co_await ws_connect(s, port, target);
        if (out.hs.ok())
            out.next = co_await ws_read(s);
    });
}

} // namespace

TEST_CASE("websocket: close before accept answers HTTP 403", "[websocket][handshake][deny]")
{
    auto cfg = ws_config();
    cfg.access_log = true;
    outcome o;
    auto r = run_outcome("/close", o, cfg);
    CSERVE_REQUIRE_RUN(r);
    CHECK(o.hs.ec == bws::error::upgrade_declined);
    CHECK(o.hs.status() == 403);
    CHECK(r.logged("\"WebSocket /close\" 403"));
}

TEST_CASE("websocket: http.response_start and body before accept are sent as the denial response",
          "[websocket][handshake][deny]")
{
    outcome o;
    auto r = run_outcome("/deny", o);
    CSERVE_REQUIRE_RUN(r);
    CHECK(o.hs.ec == bws::error::upgrade_declined);
    CHECK(o.hs.status() == 401);
    CHECK(o.hs.res.body() == "denied");
    CHECK(o.hs.header("content-type") == "text/plain");
}

TEST_CASE("websocket: a denial with a 1xx status gets HTTP 500", "[websocket][handshake][deny]")
{
    // A 1xx is not a denial (RFC 9110 §15): send() throws before anything is written.
    outcome o;
    auto r = run_outcome("/deny-101", o);
    CSERVE_REQUIRE_RUN(r);
    CHECK(o.hs.ec == bws::error::upgrade_declined);
    CHECK(o.hs.status() == 500);
    CHECK(r.logged("Exception in ASGI application"));
}

TEST_CASE("websocket: a denial that fails before its body is written gets HTTP 500",
          "[websocket][handshake][deny][errors]")
{
    // The head of a denial is held until its body: nothing went out, a 500 can replace it.
    outcome o;
    auto r = run_outcome("/deny-throw", o);
    CSERVE_REQUIRE_RUN(r);
    CHECK(o.hs.ec == bws::error::upgrade_declined);
    CHECK(o.hs.status() == 500);
    CHECK(r.logged("failed while denying"));
}

TEST_CASE("websocket: an app that returns without accepting gets HTTP 403", "[websocket][handshake][deny]")
{
    outcome o;
    auto r = run_outcome("/return", o);
    CSERVE_REQUIRE_RUN(r);
    CHECK(o.hs.ec == bws::error::upgrade_declined);
    CHECK(o.hs.status() == 403);
}

TEST_CASE("websocket: an app that throws before accepting gets HTTP 500 and the exception is logged",
          "[websocket][handshake][errors]")
{
    outcome o;
    auto r = run_outcome("/throw", o);
    CSERVE_REQUIRE_RUN(r);
    CHECK(o.hs.ec == bws::error::upgrade_declined);
    CHECK(o.hs.status() == 500);
    CHECK(o.hs.res.body().find("failed before accepting") == std::string::npos); // not leaked
    CHECK(r.logged("Exception in ASGI application"));
    CHECK(r.logged("failed before accepting"));
}

TEST_CASE("websocket: an app that returns after accepting without closing closes with 1000",
          "[websocket][close]")
{
    outcome o;
    auto r = run_outcome("/accept-return", o);
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(o.hs.ok());
    INFO("client read: " << o.next.ec.message());
    CHECK(o.next.closed());
    CHECK(o.next.close_code == 1000);
}

TEST_CASE("websocket: an app that throws after accepting closes with 1011 and the exception is logged",
          "[websocket][close][errors]")
{
    outcome o;
    auto r = run_outcome("/accept-throw", o);
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(o.hs.ok());
    INFO("client read: " << o.next.ec.message());
    CHECK(o.next.closed());
    CHECK(o.next.close_code == 1011);
    CHECK(r.logged("failed after accepting"));
}

//------------------------------------------------------------------------------
// Keepalive pings

TEST_CASE("websocket: a client that never answers pings is closed with 1011 and the app gets disconnect promptly",
          "[websocket][ping]")
{
    auto cfg = ws_config();
    cfg.ws_ping_interval = ms(100);
    cfg.ws_ping_timeout = ms(100);
    ct::flag app_done;
    std::optional<ws::disconnect> disconnect;
    std::optional<ms> disconnect_after;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await receive();
        co_await send(ws::accept{});
        auto const accepted = clock_type::now();
        auto e = co_await receive();
        if (auto* d = std::get_if<ws::disconnect>(&e))
            disconnect = *d;
        disconnect_after = std::chrono::duration_cast<ms>(clock_type::now() - accepted);
        app_done.set();
    };
    bool app_done_while_client_silent = false;
    ws_message reply;
    auto r = ct::run_server(app, cfg, [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        auto hs = co_await ws_connect(s, port, "/");
        if (!hs.ok())
            throw boost::system::system_error(hs.ec, "handshake");
        // Beast answers pings only while a read is pending: read nothing until the app
        // has seen the disconnect (or 3 s have passed). A server that told the app only
        // once the closing handshake ended would wait for this client's reply, or for its
        // 5 s close timeout: either way after this wait.
        app_done_while_client_silent = co_await app_done.wait(ms(3000));
        reply = co_await ws_read(s, ms(3000));
        co_await app_done.wait(ms(6000));
    }, {.limit = ms(10000)});
    CSERVE_REQUIRE_RUN(r);
    INFO("disconnect after " << (disconnect_after ? disconnect_after->count() : -1) << " ms");
    CHECK(app_done_while_client_silent);
    REQUIRE(disconnect);
    CHECK(disconnect->code == 1011);
    REQUIRE(disconnect_after);
    CHECK(*disconnect_after < ms(3000));
    INFO("client read: " << reply.ec.message() << " close code " << reply.close_code);
    CHECK((reply.closed() ? reply.close_code == 1011 : static_cast<bool>(reply.ec)));
    CHECK(r.logged("keepalive ping timeout"));
}

TEST_CASE("websocket: a client that answers pings stays connected across several ping intervals",
          "[websocket][ping]")
{
    auto cfg = ws_config();
    cfg.ws_ping_interval = ms(100);
    cfg.ws_ping_timeout = ms(100);
    ws_record rec;
    int pings = 0;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await receive();
        co_await send(ws::accept{});
        // Until the client has answered several pings (each 100 ms after the last), or 5 s.
        auto const until = clock_type::now() + std::chrono::seconds(5);
        while (pings < 5 && clock_type::now() < until)
            co_await ct::wait_for(ms(20));
        co_await send(ws::send{.text = "still here"});
        auto e = co_await receive();
        if (auto* m = std::get_if<ws::receive>(&e))
            rec.messages.push_back(*m);
        else if (auto* d = std::get_if<ws::disconnect>(&e))
            rec.disconnect = *d;
        co_await send(ws::close{});
    };
    ws_message first, last;
    auto r = ct::run_server(app, cfg, [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        auto hs = co_await ws_connect(s, port, "/");
        if (!hs.ok())
            throw boost::system::system_error(hs.ec, "handshake");
        s.control_callback([&](bws::frame_type kind, beast::string_view) {
            if (kind == bws::frame_type::ping)
                ++pings;
        });
        first = co_await ws_read(s, ms(8000));
        co_await ws_write(s, "thanks", true);
        last = co_await ws_read(s);
    }, {.limit = ms(15000)});
    CSERVE_REQUIRE_RUN(r);
    CHECK_FALSE(first.ec);
    CHECK(first.data == "still here");
    CHECK(pings >= 5);
    CHECK_FALSE(rec.disconnect);
    REQUIRE(rec.messages.size() == 1);
    CHECK(rec.messages[0].text == std::optional<std::string>("thanks"));
    CHECK(last.closed());
    CHECK(last.close_code == 1000);
    CHECK_FALSE(r.logged("keepalive ping timeout"));
}

//------------------------------------------------------------------------------
// permessage-deflate

TEST_CASE("websocket: permessage-deflate is negotiated when offered and a large message echoes intact",
          "[websocket][deflate]")
{
    ws_record rec;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await accept_and_echo(send, receive, rec);
    };
    handshake_result hs;
    ws_message echo;
    std::string big;
    for (int i = 0; big.size() < 100 * 1024; ++i)
        big += "line " + std::to_string(i % 100) + " of a very compressible message\n";
    auto r = ct::run_server(app, ws_config(), [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        hs = co_await ws_connect(s, port, "/", {.deflate = true});
        if (!hs.ok())
            co_return;
        co_await ws_write(s, big, true);
        echo = co_await ws_read(s);
        co_await ws_close(s, bws::close_code::normal);
    });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(hs.ok());
    CHECK(hs.header("sec-websocket-extensions").starts_with("permessage-deflate"));
    CHECK_FALSE(echo.ec);
    CHECK(echo.text);
    CHECK(echo.data.size() == big.size());
    CHECK(echo.data == big);
    REQUIRE(rec.messages.size() == 1);
    CHECK(rec.messages[0].text == std::optional<std::string>(big));
}

TEST_CASE("websocket: with ws_per_message_deflate false no extension is negotiated", "[websocket][deflate]")
{
    auto cfg = ws_config();
    cfg.ws_per_message_deflate = false;
    ws_record rec;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await accept_and_echo(send, receive, rec);
    };
    handshake_result hs;
    ws_message echo;
    auto r = ct::run_server(app, cfg, [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        hs = co_await ws_connect(s, port, "/", {.deflate = true});
        if (!hs.ok())
            co_return;
        co_await ws_write(s, payload(10000), true);
        echo = co_await ws_read(s);
        co_await ws_close(s, bws::close_code::normal);
    });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(hs.ok());
    CHECK_FALSE(hs.has("sec-websocket-extensions"));
    CHECK(echo.data == payload(10000));
}

//------------------------------------------------------------------------------
// Flow control

TEST_CASE("websocket: send() waits for a client that does not read, then every message arrives in order",
          "[websocket][backpressure]")
{
    constexpr int count = 2000;
    constexpr std::size_t size = 64 * 1024;
    int sent = 0;
    std::string send_failure;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await receive();
        co_await send(ws::accept{});
        try {
            for (int i = 0; i < count; ++i) {
                std::string m(size, static_cast<char>('a' + i % 26));
                std::string index = std::to_string(i);
                m.replace(0, index.size() + 1, index + ":");
                co_await send(ws::send{.bytes = std::move(m)});
                ++sent;
            }
            co_await send(ws::close{});
        } catch (std::exception const& e) {
            send_failure = e.what();
        }
    };
    int sent_while_not_reading = -1;
    int received = 0;
    int first_bad = -1;
    ws_message last;
    auto r = ct::run_server(app, ws_config(), [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        auto hs = co_await ws_connect(s, port, "/");
        if (!hs.ok())
            throw boost::system::system_error(hs.ec, "handshake");
        // Not reading until the server's sends have stalled: none completed for 300 ms (or
        // 10 s passed). A server that does not wait for the client gets through all of them.
        auto const until = clock_type::now() + std::chrono::seconds(10);
        int seen = -1;
        auto changed = clock_type::now();
        while (clock_type::now() < until) {
            if (sent != seen) {
                seen = sent;
                changed = clock_type::now();
            } else if (sent > 0 && clock_type::now() - changed >= ms(300)) {
                break;
            }
            co_await ct::wait_for(ms(10));
        }
        sent_while_not_reading = sent;
        for (;;) {
            auto m = co_await ws_read(s, ms(5000));
            if (m.ec) {
                last = m;
                break;
            }
            std::string index = std::to_string(received);
            bool good = !m.text && m.data.size() == size && m.data.compare(0, index.size() + 1, index + ":") == 0 &&
                        m.data.back() == static_cast<char>('a' + received % 26);
            if (!good && first_bad < 0)
                first_bad = received;
            ++received;
        }
    }, {.limit = ms(30000)});
    CSERVE_REQUIRE_RUN(r);
    INFO("sends completed while the client was not reading: " << sent_while_not_reading);
    CHECK(sent_while_not_reading > 0);
    CHECK(sent_while_not_reading < 500); // 32 MiB: far more than the socket buffers hold
    CHECK(send_failure.empty());
    CHECK(sent == count);
    CHECK(received == count);
    CHECK(first_bad == -1);
    CHECK(last.closed());
    CHECK(last.close_code == 1000);
}

TEST_CASE("websocket: with ws_max_queue 2 an app that does not receive for a while still gets every message in order",
          "[websocket][backpressure][queue]")
{
    auto cfg = ws_config();
    cfg.ws_max_queue = 2;
    constexpr int count = 20;
    std::vector<std::string> got;
    std::optional<ws::disconnect> early_disconnect;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await receive();
        co_await send(ws::accept{});
        co_await ct::wait_for(ms(300));
        while (got.size() < count) {
            auto e = co_await receive();
            auto* m = std::get_if<ws::receive>(&e);
            if (!m) {
                if (auto* d = std::get_if<ws::disconnect>(&e))
                    early_disconnect = *d;
                co_return;
            }
            got.push_back(m->text.value_or("<bytes>"));
        }
        co_await send(ws::send{.text = "got " + std::to_string(got.size())});
        co_await send(ws::close{});
    };
    std::vector<beast::error_code> write_errors;
    ws_message summary, last;
    auto r = ct::run_server(app, cfg, [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        auto hs = co_await ws_connect(s, port, "/");
        if (!hs.ok())
            throw boost::system::system_error(hs.ec, "handshake");
        for (int i = 0; i < count; ++i)
            write_errors.push_back(co_await ws_write(s, "m" + std::to_string(i), true));
        summary = co_await ws_read(s);
        last = co_await ws_read(s);
    });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(write_errors.size() == count);
    for (auto const& ec : write_errors)
        CHECK_FALSE(ec);
    CHECK_FALSE(early_disconnect);
    std::vector<std::string> expected;
    for (int i = 0; i < count; ++i)
        expected.push_back("m" + std::to_string(i));
    CHECK(got == expected);
    CHECK(summary.data == "got 20");
    CHECK(last.closed());
}

TEST_CASE("websocket: a receive() cancelled by a timer loses no message, and the next receive() gets it",
          "[websocket][receive][cancel]")
{
    using namespace net::experimental::awaitable_operators;
    std::vector<std::string> got;
    int timeouts = 0;
    std::string failure;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await receive();
        co_await send(ws::accept{});
        try {
            // Waits with a deadline until the first message: receive() loses the race
            // to the timer a few times and is cancelled each time.
            for (;;) {
                net::steady_timer t(co_await net::this_coro::executor, ms(40));
                // The operator flattens the event's alternatives and the timer's monostate.
                auto r = co_await (receive() || t.async_wait(net::use_awaitable));
                if (std::holds_alternative<std::monostate>(r)) {
                    ++timeouts;
                    if (timeouts == 3)
                        co_await send(ws::send{.text = "waited"});
                    continue;
                }
                auto* m = std::get_if<ws::receive>(&r);
                if (!m)
                    co_return;
                got.push_back(m->text.value_or("<bytes>"));
                break;
            }
            for (;;) {
                auto e = co_await receive();
                auto* m = std::get_if<ws::receive>(&e);
                if (!m)
                    break;
                got.push_back(m->text.value_or("<bytes>"));
                if (got.size() == 3)
                    co_await send(ws::send{.text = "got 3"});
            }
        } catch (std::exception const& e) {
            failure = e.what();
        }
    };
    ws_message waited, summary;
    auto r = ct::run_server(app, ws_config(), [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        auto hs = co_await ws_connect(s, port, "/");
        if (!hs.ok())
            throw boost::system::system_error(hs.ec, "handshake");
        waited = co_await ws_read(s);
        for (auto m : {"a", "b", "c"})
            co_await ws_write(s, m, true);
        summary = co_await ws_read(s);
        co_await ws_close(s, bws::close_code::normal);
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(failure.empty());
    CHECK(timeouts >= 3);
    CHECK(waited.data == "waited");
    CHECK(got == std::vector<std::string>{"a", "b", "c"});
    CHECK(summary.data == "got 3");
}

TEST_CASE("websocket: a second receive() while one is waiting is an error, and the first still gets its message",
          "[websocket][receive]")
{
    std::string second_error;
    std::optional<ws::receive> first;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await receive();
        co_await send(ws::accept{});
        auto ex = co_await net::this_coro::executor;
        net::co_spawn(ex, [&, receive]() -> task<> {
            auto e = co_await receive();
            if (auto* m = std::get_if<ws::receive>(&e))
                first = *m;
        }, net::detached);
        co_await ct::wait_for(ms(20));
        try {
            co_await receive();
        } catch (std::exception const& e) {
            second_error = e.what();
        }
        co_await send(ws::send{.text = "ready"});
        while (!first)
            co_await ct::wait_for(ms(5));
        co_await send(ws::send{.text = "first got " + first->text.value_or("")});
        co_await send(ws::close{});
    };
    ws_message ready, reply;
    auto r = ct::run_server(app, ws_config(), [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        auto hs = co_await ws_connect(s, port, "/");
        if (!hs.ok())
            throw boost::system::system_error(hs.ec, "handshake");
        ready = co_await ws_read(s);
        co_await ws_write(s, "one", true);
        reply = co_await ws_read(s);
        co_await ws_read(s);
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(second_error.find("another receive()") != std::string::npos);
    CHECK(ready.data == "ready");
    CHECK(reply.data == "first got one");
}

//------------------------------------------------------------------------------
// Server shutdown and configuration

TEST_CASE("websocket: graceful shutdown closes an open WebSocket with 1012 and serve() completes",
          "[websocket][shutdown]")
{
    ws_record rec;
    auto app = [&](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        co_await accept_and_echo(send, receive, rec);
    };
    ws_message echo, closing;
    clock_type::time_point shutdown_at{};
    auto r = ct::run_server(
        app, ws_config(),
        [&](cserve::server& srv, unsigned short port) -> task<> {
            ws_stream s(co_await net::this_coro::executor);
            auto hs = co_await ws_connect(s, port, "/");
            if (!hs.ok())
                throw boost::system::system_error(hs.ec, "handshake");
            co_await ws_write(s, "before", true);
            echo = co_await ws_read(s);
            shutdown_at = clock_type::now();
            srv.shutdown();
            closing = co_await ws_read(s);
        },
        {.limit = ms(20000), .shutdown_after_client = false});
    auto const drained_in = clock_type::now() - shutdown_at;
    CSERVE_REQUIRE_RUN(r);
    CHECK(echo.data == "before");
    INFO("client read: " << closing.ec.message());
    CHECK(closing.closed());
    CHECK(closing.close_code == 1012);
    REQUIRE(rec.disconnect);
    CHECK(rec.disconnect->code == 1012);
    CHECK(r.connections_after_serve == 0);
    // Ample on a loaded machine, and below the 5 s a server that did not see the client's
    // closing reply would wait before dropping the connection.
    CHECK(drained_in < ms(4000));
}

TEST_CASE("websocket: with ws false an upgrade request is served as plain HTTP", "[websocket][config]")
{
    auto cfg = ws_config();
    cfg.ws = false;
    std::optional<cserve::scope_type> type;
    std::string scheme;
    auto app = [&](cserve::scope& scope, cserve::receive, cserve::send send) -> task<> {
        type = scope.type;
        scheme = scope.scheme;
        co_await send(http::response_start{.status = 200, .headers = {{"content-length", "10"}}});
        co_await send(http::response_body{.body = "plain http"});
    };
    handshake_result hs;
    auto r = ct::run_server(app, cfg, [&](unsigned short port) -> task<> {
        ws_stream s(co_await net::this_coro::executor);
        hs = co_await ws_connect(s, port, "/ws");
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(type == std::optional(cserve::scope_type::http));
    CHECK(scheme == "http");
    CHECK(hs.ec == bws::error::upgrade_declined);
    CHECK(hs.status() == 200);
    CHECK(hs.res.body() == "plain http");
}
