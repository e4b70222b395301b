// tests/fuzz/fuzz_app.hpp -- the application and settings behind the connection harnesses
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_TESTS_FUZZ_APP_HPP
#define CSERVE_TESTS_FUZZ_APP_HPP

#include <cserve/app.hpp>
#include <cserve/config.hpp>
#include <cserve/event.hpp>
#include <cserve/scope.hpp>
#include <cserve/task.hpp>

#include <stdexcept>
#include <string>
#include <string_view>

namespace cserve_fuzz {

namespace http = cserve::http;
namespace ws = cserve::websocket;

// The application reaches the paths the bytes can take: by path it reads the body and echoes
// its size, streams a chunked response, answers HEAD and 204, throws before or after its
// response started, sends trailers, or (as a WebSocket) accepts and echoes.
inline cserve::task<>
websocket(cserve::receive receive, cserve::send send)
{
    co_await receive(); // connect
    co_await send(ws::accept{});
    for (int i = 0; i < 4; ++i) {
        auto e = co_await receive();
        auto* m = std::get_if<ws::receive>(&e);
        if (!m)
            co_return;
        co_await send(ws::send{.bytes = m->bytes, .text = m->text});
    }
    co_await send(ws::close{.code = 1000});
}

inline cserve::task<>
app(cserve::scope& s, cserve::receive receive, cserve::send send)
{
    if (s.type == cserve::scope_type::websocket) {
        if (s.path.find("deny") != std::string::npos)
            co_return; // closes before accepting: 403
        co_await websocket(receive, send);
        co_return;
    }
    std::string_view path = s.path;
    if (path.find("throw") != std::string_view::npos)
        throw std::runtime_error("the application failed");
    if (path.find("hint") != std::string_view::npos)
        co_await send(http::response_early_hint{.links = {"</a.css>; rel=preload"}});
    if (path.find("204") != std::string_view::npos) {
        co_await send(http::response_start{.status = 204});
        co_await send(http::response_body{});
        co_return;
    }
    std::size_t got = 0;
    for (;;) {
        auto e = co_await receive();
        auto* r = std::get_if<http::request>(&e);
        if (!r)
            co_return; // the client left
        got += r->body.size();
        if (!r->more_body)
            break;
    }
    if (path.find("stream") != std::string_view::npos) {
        bool trailers = path.find("trailer") != std::string_view::npos;
        co_await send(http::response_start{.status = 200, .trailers = trailers});
        for (int i = 0; i < 3; ++i)
            co_await send(http::response_body{.body = "piece " + std::to_string(i) + "\n", .more_body = true});
        if (path.find("late") != std::string_view::npos)
            throw std::runtime_error("failed while streaming");
        co_await send(http::response_body{});
        if (trailers)
            co_await send(http::response_trailers{.headers = {{"x-checksum", std::to_string(got)}}});
        co_return;
    }
    std::string body = std::to_string(got);
    co_await send(http::response_start{.status = 200, .headers = {{"content-length", std::to_string(body.size())}}});
    co_await send(http::response_body{.body = std::move(body)});
}

inline cserve::config
config()
{
    cserve::config cfg;
    cfg.lifespan = cserve::lifespan_mode::off;
    cfg.access_log = false;
    cfg.log_level = cserve::log_level::critical;
    cfg.log_sink = [](cserve::log_level, std::string_view) {};
    cfg.max_header_bytes = 4096;
    cfg.limit_request_body = 4096;
    cfg.ws_max_size = 64 * 1024;
    cfg.ws_max_queue = 4;
    return cfg;
}

} // namespace cserve_fuzz

#endif
