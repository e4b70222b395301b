// Example: every HTTP feature of cserve behind one route table (the server the tests drive)
//
//   build/examples/httpbin --port 8000 [--help for every flag]
//
// Routes (every GET route answers HEAD too):
//   GET /                 Hello, world!
//   ANY /echo             streams the request body back
//   GET /headers          the request headers as JSON, in received order
//   GET /scope            the ASGI scope as JSON (over TLS with "tls": every field of the ASGI
//                         "tls" extension; /ws/scope too)
//   GET /bytes/{n}        n bytes 'a'..'z' repeated, with content-length
//   GET /stream/{n}       n chunks "chunk {i}\n", chunked
//   GET /status/{code}    that status, empty body
//   GET /delay/{ms}       waits, then "done"
//   GET /block/{ms}       blocks the worker's event loop (a synchronous sleep), then "done";
//                         what the --workers watchdog (--timeout-worker-healthcheck) catches
//   GET /early-hints      a 103 Early Hints with two Link headers, then "hinted"
//   GET /trailers         "body" in a chunked (HTTP/1.1) or framed (HTTP/2) body, then the
//                         trailer x-checksum: abc
//   GET /error/before     throws before the response starts   -> 500
//   GET /error/started    throws after response_start, before any body -> 500
//   GET /error/after      throws after 5 of its 10 body bytes -> connection closed
//   GET /error/none       returns without a response          -> 500
//   GET /pid              the serving process id (a worker's, under --workers)
//   GET /disconnect       waits for the client to go, counts it
//   GET /disconnects      {"count": N}
//   POST /upload          reads the body, {"bytes": N}
//   GET /state            {"startup_ran": true} once the lifespan startup has run
//
// With HTTPBIN_FAIL_STARTUP=message in the environment the lifespan startup fails with that
// message (the server then exits with status 3). The app is built per worker with
// cserve::factory, so each worker process has its own counters.
//
// WebSocket routes:
//   /ws/echo              accepts (first offered subprotocol), echoes text as text, bytes as bytes
//   /ws/reject            closes before accepting: HTTP 403
//   /ws/deny              a denial response of its own: 401 "denied"
//   /ws/close/{code}      accepts, then closes with that code and reason "bye"
//   /ws/scope             accepts, sends the scope as JSON text, closes 1000
//   /ws/stream/{n}        accepts, sends n text messages "msg {i}", closes 1000
#include <cserve/cserve.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include <unistd.h>

namespace {

namespace net = boost::asio;
namespace http = cserve::http;

// What one application instance (one per worker) keeps.
struct app_state {
    // Clients that went away while waiting on /disconnect (one io_context thread).
    std::uint64_t disconnects = 0;
};

std::optional<std::uint64_t>
number(std::string_view s)
{
    std::uint64_t v = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size())
        return std::nullopt;
    return v;
}

void
append_json_string(std::string& out, std::string_view s)
{
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (c < 0x20) {
                static constexpr char hex[] = "0123456789abcdef";
                out += "\\u00";
                out += hex[c >> 4];
                out += hex[c & 15];
            } else {
                out += static_cast<char>(c);
            }
        }
    }
    out += '"';
}

void
append_address(std::string& out, std::optional<cserve::address> const& a)
{
    if (!a) {
        out += "null";
        return;
    }
    out += '[';
    append_json_string(out, a->host);
    out += ", ";
    out += std::to_string(a->port);
    out += ']';
}

// `"tls": {...}`, the ASGI "tls" extension, over TLS; nothing over cleartext.
void
append_tls(std::string& out, cserve::scope const& scope)
{
    auto const* tls = scope.tls();
    if (!tls)
        return;
    auto optional = [&](std::optional<std::string> const& v) {
        if (v)
            append_json_string(out, *v);
        else
            out += "null";
    };
    out += ", \"tls\": {\"server_cert\": ";
    append_json_string(out, tls->server_cert);
    out += ", \"client_cert_chain\": [";
    for (std::size_t i = 0; i < tls->client_cert_chain.size(); ++i) {
        if (i)
            out += ", ";
        append_json_string(out, tls->client_cert_chain[i]);
    }
    out += "], \"client_cert_name\": ";
    optional(tls->client_cert_name);
    out += ", \"client_cert_error\": ";
    optional(tls->client_cert_error);
    out += ", \"tls_version\": " + std::to_string(tls->tls_version);
    out += ", \"cipher_suite\": " + std::to_string(tls->cipher_suite);
    out += '}';
}

cserve::task<>
respond(cserve::send send, int status, std::string body, std::string content_type = "text/plain")
{
    co_await send(http::response_start{
        .status = status,
        .headers = {{"content-type", std::move(content_type)}, {"content-length", std::to_string(body.size())}},
    });
    co_await send(http::response_body{.body = std::move(body)});
}

cserve::task<>
echo(cserve::scope& scope, cserve::receive receive, cserve::send send)
{
    std::string type(scope.header("content-type").value_or("application/octet-stream"));
    co_await send(http::response_start{.status = 200, .headers = {{"content-type", std::move(type)}}});
    for (;;) {
        auto e = co_await receive();
        auto* chunk = std::get_if<http::request>(&e);
        if (!chunk)
            co_return; // the client went away
        bool more = chunk->more_body;
        co_await send(http::response_body{.body = std::move(chunk->body), .more_body = more});
        if (!more)
            co_return;
    }
}

cserve::task<>
headers(cserve::scope& scope, cserve::send send)
{
    std::string json = "{\"headers\": [";
    bool first = true;
    for (auto const& [name, value] : scope.headers) {
        if (!first)
            json += ", ";
        first = false;
        json += '[';
        append_json_string(json, name);
        json += ", ";
        append_json_string(json, value);
        json += ']';
    }
    json += "]}";
    co_await respond(send, 200, std::move(json), "application/json");
}

cserve::task<>
scope_json(cserve::scope& scope, cserve::send send)
{
    std::string json = "{\"type\": \"http\", \"http_version\": ";
    append_json_string(json, scope.http_version);
    json += ", \"method\": ";
    append_json_string(json, scope.method);
    json += ", \"scheme\": ";
    append_json_string(json, scope.scheme);
    json += ", \"path\": ";
    append_json_string(json, scope.path);
    json += ", \"raw_path\": ";
    append_json_string(json, scope.raw_path);
    json += ", \"query_string\": ";
    append_json_string(json, scope.query_string);
    json += ", \"root_path\": ";
    append_json_string(json, scope.root_path);
    json += ", \"client\": ";
    append_address(json, scope.client);
    json += ", \"server\": ";
    append_address(json, scope.server);
    append_tls(json, scope);
    json += '}';
    co_await respond(send, 200, std::move(json), "application/json");
}

cserve::task<>
bytes(std::uint64_t n, cserve::send send)
{
    co_await send(http::response_start{
        .status = 200,
        .headers = {{"content-type", "application/octet-stream"}, {"content-length", std::to_string(n)}},
    });
    // Large bodies go out in 64 KiB pieces: send() completes as the client reads them.
    constexpr std::uint64_t piece = 64 * 1024;
    static std::string const pattern = [] {
        std::string s(piece + 26, '\0');
        for (std::size_t k = 0; k < s.size(); ++k)
            s[k] = static_cast<char>('a' + k % 26);
        return s;
    }();
    std::uint64_t i = 0;
    do {
        auto len = std::min(piece, n - i);
        std::string body(pattern, i % 26, len);
        i += len;
        co_await send(http::response_body{.body = std::move(body), .more_body = i < n});
    } while (i < n);
}

cserve::task<>
stream(std::uint64_t n, cserve::send send)
{
    co_await send(http::response_start{.status = 200, .headers = {{"content-type", "text/plain"}}});
    for (std::uint64_t i = 0; i < n; ++i)
        co_await send(http::response_body{.body = "chunk " + std::to_string(i) + "\n", .more_body = true});
    co_await send(http::response_body{});
}

namespace ws = cserve::websocket;

cserve::task<>
lifespan(cserve::scope& scope, cserve::receive receive, cserve::send send)
{
    for (;;) {
        auto e = co_await receive();
        if (std::holds_alternative<cserve::lifespan::startup>(e)) {
            if (char const* fail = std::getenv("HTTPBIN_FAIL_STARTUP")) {
                co_await send(cserve::lifespan::startup_failed{.message = fail});
                co_return;
            }
            scope.state["startup_ran"] = true;
            co_await send(cserve::lifespan::startup_complete{});
        } else if (std::holds_alternative<cserve::lifespan::shutdown>(e)) {
            co_await send(cserve::lifespan::shutdown_complete{});
            co_return;
        }
    }
}

std::string
scope_text(cserve::scope& scope)
{
    std::string json = "{\"type\": ";
    append_json_string(json, scope.type == cserve::scope_type::websocket ? "websocket" : "http");
    json += ", \"http_version\": ";
    append_json_string(json, scope.http_version);
    json += ", \"path\": ";
    append_json_string(json, scope.path);
    json += ", \"query_string\": ";
    append_json_string(json, scope.query_string);
    json += ", \"root_path\": ";
    append_json_string(json, scope.root_path);
    json += ", \"scheme\": ";
    append_json_string(json, scope.scheme);
    json += ", \"subprotocols\": [";
    for (std::size_t i = 0; i < scope.subprotocols.size(); ++i) {
        if (i)
            json += ", ";
        append_json_string(json, scope.subprotocols[i]);
    }
    json += "], \"client\": ";
    append_address(json, scope.client);
    append_tls(json, scope);
    json += '}';
    return json;
}

cserve::task<>
websocket_app(cserve::scope& scope, cserve::receive receive, cserve::send send)
{
    std::string_view path = scope.path;
    if (path.starts_with(scope.root_path))
        path.remove_prefix(scope.root_path.size());
    co_await receive(); // websocket.connect

    if (path == "/ws/echo") {
        ws::accept a;
        if (!scope.subprotocols.empty())
            a.subprotocol = std::string(scope.subprotocols.front());
        co_await send(std::move(a));
        for (;;) {
            auto e = co_await receive();
            auto* m = std::get_if<ws::receive>(&e);
            if (!m)
                co_return; // disconnect
            co_await send(ws::send{.bytes = std::move(m->bytes), .text = std::move(m->text)});
        }
    } else if (path == "/ws/reject") {
        co_await send(ws::close{});
    } else if (path == "/ws/deny") {
        co_await send(http::response_start{.status = 401, .headers = {{"content-type", "text/plain"}, {"content-length", "6"}}});
        co_await send(http::response_body{.body = "denied"});
    } else if (path.starts_with("/ws/close/") && number(path.substr(10))) {
        co_await send(ws::accept{});
        co_await send(ws::close{.code = static_cast<int>(*number(path.substr(10))), .reason = "bye"});
    } else if (path == "/ws/scope") {
        co_await send(ws::accept{});
        co_await send(ws::send{.text = scope_text(scope)});
        co_await send(ws::close{.code = 1000});
    } else if (path.starts_with("/ws/stream/") && number(path.substr(11))) {
        co_await send(ws::accept{});
        auto n = *number(path.substr(11));
        for (std::uint64_t i = 0; i < n; ++i)
            co_await send(ws::send{.text = "msg " + std::to_string(i)});
        co_await send(ws::close{.code = 1000});
    } else {
        co_await send(ws::close{}); // unknown route: 403
    }
}

cserve::task<>
app(app_state& st, cserve::scope& scope, cserve::receive receive, cserve::send send)
{
    if (scope.type == cserve::scope_type::lifespan) {
        co_await lifespan(scope, receive, send);
        co_return;
    }
    if (scope.type == cserve::scope_type::websocket) {
        co_await websocket_app(scope, receive, send);
        co_return;
    }
    std::string_view path = scope.path;
    if (path.starts_with(scope.root_path))
        path.remove_prefix(scope.root_path.size());
    bool const get = scope.method == "GET" || scope.method == "HEAD";
    auto tail = [&](std::string_view prefix) -> std::optional<std::string_view> {
        if (get && path.starts_with(prefix))
            return path.substr(prefix.size());
        return std::nullopt;
    };

    if (get && path == "/") {
        co_await respond(send, 200, "Hello, world!");
    } else if (path == "/echo") {
        co_await echo(scope, receive, send);
    } else if (get && path == "/headers") {
        co_await headers(scope, send);
    } else if (get && path == "/scope") {
        co_await scope_json(scope, send);
    } else if (auto n = tail("/bytes/"); n && number(*n)) {
        co_await bytes(*number(*n), send);
    } else if (auto n = tail("/stream/"); n && number(*n)) {
        co_await stream(*number(*n), send);
    } else if (auto code = tail("/status/"); code && number(*code) && *number(*code) >= 100 &&
                                             *number(*code) <= 999) {
        co_await send(http::response_start{.status = static_cast<int>(*number(*code))});
        co_await send(http::response_body{});
    } else if (auto ms = tail("/delay/"); ms && number(*ms)) {
        net::steady_timer timer(co_await net::this_coro::executor, std::chrono::milliseconds(*number(*ms)));
        co_await timer.async_wait(net::use_awaitable);
        co_await respond(send, 200, "done");
    } else if (get && path == "/early-hints") {
        co_await send(http::response_early_hint{
            .links = {"</style.css>; rel=preload; as=style", "<https://cdn.example>; rel=preconnect"}});
        co_await respond(send, 200, "hinted");
    } else if (get && path == "/trailers") {
        co_await send(http::response_start{.status = 200, .headers = {{"content-type", "text/plain"}}, .trailers = true});
        co_await send(http::response_body{.body = "body"});
        co_await send(http::response_trailers{.headers = {{"x-checksum", "abc"}}});
    } else if (get && path == "/error/before") {
        throw std::runtime_error("failure before the response started");
    } else if (get && path == "/error/started") {
        co_await send(http::response_start{.status = 200, .headers = {{"content-length", "10"}}});
        throw std::runtime_error("failure after the response started, before its body");
    } else if (get && path == "/error/after") {
        co_await send(http::response_start{.status = 200, .headers = {{"content-length", "10"}}});
        co_await send(http::response_body{.body = "01234", .more_body = true});
        throw std::runtime_error("failure after the response started");
    } else if (get && path == "/error/none") {
        co_return;
    } else if (auto ms = tail("/block/"); ms && number(*ms)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(*number(*ms))); // deliberately blocking
        co_await respond(send, 200, "done");
    } else if (get && path == "/pid") {
        co_await respond(send, 200, std::to_string(::getpid()));
    } else if (get && path == "/disconnect") {
        for (;;) {
            auto e = co_await receive();
            if (std::holds_alternative<http::disconnect>(e))
                break;
        }
        ++st.disconnects;
    } else if (get && path == "/state") {
        bool ran = scope.state.contains("startup_ran");
        co_await respond(send, 200, ran ? "{\"startup_ran\": true}" : "{\"startup_ran\": false}", "application/json");
    } else if (get && path == "/disconnects") {
        co_await respond(send, 200, "{\"count\": " + std::to_string(st.disconnects) + "}", "application/json");
    } else if (scope.method == "POST" && path == "/upload") {
        std::uint64_t total = 0;
        for (;;) {
            auto e = co_await receive();
            auto* chunk = std::get_if<http::request>(&e);
            if (!chunk)
                co_return;
            total += chunk->body.size();
            if (!chunk->more_body)
                break;
        }
        co_await respond(send, 200, "{\"bytes\": " + std::to_string(total) + "}", "application/json");
    } else {
        co_await respond(send, 404, "Not Found");
    }
}

// Called in each worker after fork: every worker gets its own state.
cserve::app_function
make_app()
{
    auto st = std::make_shared<app_state>();
    return [st](cserve::scope& scope, cserve::receive receive, cserve::send send) {
        return app(*st, scope, receive, send);
    };
}

} // namespace

int
main(int argc, char** argv)
{
    return cserve::run(cserve::factory(make_app), argc, argv);
}
