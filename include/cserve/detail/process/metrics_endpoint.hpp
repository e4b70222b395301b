// cserve/detail/process/metrics_endpoint.hpp -- run()'s /metrics and /healthz listener
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_PROCESS_METRICS_ENDPOINT_HPP
#define CSERVE_DETAIL_PROCESS_METRICS_ENDPOINT_HPP

// Included by impl/run.ipp only.

#include <cserve/app.hpp>
#include <cserve/event.hpp>
#include <cserve/metrics.hpp>
#include <cserve/scope.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace cserve::detail {

// What the metrics listener answers, whoever serves it (a worker's server, or the master).
struct metrics_reply {
    int status = 200;
    std::string_view reason = "OK";
    std::string_view content_type = "text/plain; charset=utf-8";
    std::string body;
    bool allow = false; // a 405: say "allow: GET, HEAD"
};

// The health of what is behind the listener: "" serving, else why not ("starting", "draining").
using health_fn = std::function<std::string_view()>;
using figures_fn = std::function<std::string()>;

inline metrics_reply
metrics_answer(std::string_view method, std::string_view path, figures_fn const& figures, health_fn const& health)
{
    metrics_reply r;
    if (path != "/metrics" && path != "/healthz") {
        r.status = 404;
        r.reason = "Not Found";
        r.body = "Not Found: this listener serves /metrics and /healthz\n";
        return r;
    }
    if (method != "GET" && method != "HEAD") {
        r.status = 405;
        r.reason = "Method Not Allowed";
        r.body = "Method Not Allowed\n";
        r.allow = true;
        return r;
    }
    if (path == "/metrics") {
        r.content_type = "text/plain; version=0.0.4; charset=utf-8";
        r.body = figures();
        return r;
    }
    auto why = health();
    if (why.empty()) {
        r.body = "ok\n";
    } else {
        r.status = 503;
        r.reason = "Service Unavailable";
        r.body = std::string(why) + "\n";
    }
    return r;
}

// A single process's listener: an application for a second cserve::server.
inline app_function
metrics_app(figures_fn figures, health_fn health)
{
    return [figures = std::move(figures), health = std::move(health)](scope const& s, receive, send snd) -> task<> {
        if (s.type != scope_type::http)
            co_return; // lifespan: nothing to do
        auto r = metrics_answer(s.method, s.path, figures, health);
        http::response_start start;
        start.status = r.status;
        start.headers.emplace_back("content-type", r.content_type);
        start.headers.emplace_back("cache-control", "no-store");
        if (r.allow)
            start.headers.emplace_back("allow", "GET, HEAD");
        start.headers.emplace_back("content-length", std::to_string(r.body.size()));
        co_await snd(std::move(start));
        co_await snd(http::response_body{std::move(r.body), false});
    };
}

// The master's listener. The master has no event loop of Asio's but a poll(2) loop, and it
// forks: a worker must be able to close every descriptor of this (fds()), so that a
// connection the master closes is closed for good. Requests are parsed by Beast; each
// connection may send a request header of up to 8 KiB, and is closed 10 s after its last
// response (or its opening) unless another request has come whole meanwhile.
class metrics_listener {
public:
    using clock = std::chrono::steady_clock;

    metrics_listener() = default;
    metrics_listener(metrics_listener const&) = delete;
    metrics_listener& operator=(metrics_listener const&) = delete;
    ~metrics_listener() { close_all(); }

    // Binds host:port (SO_REUSEPORT, so that an upgrade's new master binds it too while this
    // one drains). Returns "" or what went wrong; bound_port() tells the port.
    std::string
    bind(std::string const& host, std::uint16_t port, int backlog)
    {
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
        addrinfo* res = nullptr;
        auto service = std::to_string(port);
        if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0)
            return "cannot resolve '" + host + "': " + ::gai_strerror(rc);
        int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        std::string err;
        int one = 1;
        if (fd < 0 || ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
            ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
            ::bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, backlog) != 0)
            err = std::strerror(errno);
        if (err.empty()) {
            sockaddr_storage ss{};
            socklen_t len = sizeof ss;
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
            char h[NI_MAXHOST], p[NI_MAXSERV];
            if (::getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, h, sizeof h, p, sizeof p, NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
                port_ = static_cast<std::uint16_t>(std::atoi(p));
                url_ = std::string("http://") + (ss.ss_family == AF_INET6 ? "[" + std::string(h) + "]" : std::string(h)) +
                       ":" + p;
            }
        }
        ::freeaddrinfo(res);
        if (!err.empty()) {
            if (fd >= 0)
                ::close(fd);
            return err;
        }
        fd_ = fd;
        return {};
    }

    std::uint16_t bound_port() const noexcept { return port_; }
    std::string const& url() const noexcept { return url_; }
    bool open() const noexcept { return fd_ >= 0; }

    // What poll(2) is to watch.
    void
    add_pollfds(std::vector<pollfd>& fds) const
    {
        if (fd_ < 0)
            return;
        fds.push_back({fd_, POLLIN, 0});
        for (auto const& c : conns_)
            fds.push_back({c.fd, static_cast<short>(c.out.size() > c.sent ? POLLOUT : POLLIN), 0});
    }

    // Accepts, reads, answers and writes what it can without blocking.
    void
    step(figures_fn const& figures, health_fn const& health, clock::time_point now)
    {
        if (fd_ < 0)
            return;
        for (;;) {
            int c = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (c < 0)
                break; // EAGAIN, or a failure that the next poll retries
            if (conns_.size() >= max_connections) {
                ::close(c);
                continue;
            }
            conn& added = conns_.emplace_back();
            added.fd = c;
            added.last = now;
            new_parser(added);
        }
        for (auto& c : conns_)
            serve(c, figures, health, now);
        std::erase_if(conns_, [](conn const& c) { return c.fd < 0; });
    }

    // Every descriptor: a forked worker closes them.
    std::vector<int>
    fds() const
    {
        std::vector<int> v;
        if (fd_ >= 0)
            v.push_back(fd_);
        for (auto const& c : conns_)
            v.push_back(c.fd);
        return v;
    }

    // In a forked child: forget the descriptors without touching the connections.
    void
    abandon() noexcept
    {
        for (int fd : fds())
            ::close(fd);
        fd_ = -1;
        conns_.clear();
    }

    void
    close_all() noexcept
    {
        for (auto& c : conns_)
            ::close(c.fd);
        conns_.clear();
        if (fd_ >= 0)
            ::close(fd_);
        fd_ = -1;
    }

private:
    static constexpr std::size_t max_connections = 64;
    static constexpr auto idle_limit = std::chrono::seconds(10);

    struct conn {
        int fd = -1;
        std::string in;
        std::string out;
        std::size_t sent = 0;
        bool close_after = false;
        clock::time_point last;
        std::unique_ptr<boost::beast::http::request_parser<boost::beast::http::empty_body>> parser;
    };

    static void
    new_parser(conn& c)
    {
        c.parser = std::make_unique<boost::beast::http::request_parser<boost::beast::http::empty_body>>();
        c.parser->header_limit(8192);
    }

    void
    drop(conn& c) noexcept
    {
        ::close(c.fd);
        c.fd = -1;
    }

    void
    serve(conn& c, figures_fn const& figures, health_fn const& health, clock::time_point now, int round = 0)
    {
        // Write what is pending first; read only once it is all out.
        while (c.sent < c.out.size()) {
            auto n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                return drop(c);
            }
            c.sent += static_cast<std::size_t>(n);
            c.last = now;
        }
        if (c.sent < c.out.size()) {
            if (now - c.last > idle_limit)
                drop(c);
            return;
        }
        c.out.clear();
        c.sent = 0;
        if (c.close_after)
            return drop(c);
        char buf[4096];
        for (;;) {
            auto n = ::recv(c.fd, buf, sizeof buf, 0);
            if (n == 0)
                return drop(c);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                return drop(c);
            }
            c.in.append(buf, static_cast<std::size_t>(n));
            if (c.in.size() > 16384)
                break;
        }
        // Every complete request in, answered in order.
        while (!c.in.empty() && !c.close_after) {
            boost::system::error_code ec;
            auto used = c.parser->put(boost::asio::buffer(c.in), ec);
            c.in.erase(0, used);
            if (ec == boost::beast::http::error::need_more)
                break;
            if (ec) {
                reply(c, metrics_reply{400, "Bad Request", "text/plain; charset=utf-8", "Bad Request: " + ec.message() + "\n"},
                      false, true);
                break;
            }
            if (!c.parser->is_done())
                break;
            auto const& req = c.parser->get();
            std::string_view target(req.target().data(), req.target().size());
            auto path = target.substr(0, target.find('?'));
            std::string_view method(req.method_string().data(), req.method_string().size());
            reply(c, metrics_answer(method, path, figures, health), method == "HEAD", !req.keep_alive());
            c.last = now;
            new_parser(c);
        }
        if (c.in.size() > 16384) // more than a header may hold, unparsed
            reply(c, metrics_reply{431, "Request Header Fields Too Large", "text/plain; charset=utf-8", "Request Header Fields Too Large\n"},
                  false, true);
        if (!c.out.empty() && round < 4)
            return serve(c, figures, health, now, round + 1); // write it now (a few rounds a step)
        if (now - c.last > idle_limit)
            drop(c);
    }

    static void
    reply(conn& c, metrics_reply const& r, bool head, bool close)
    {
        c.out += "HTTP/1.1 " + std::to_string(r.status) + " " + std::string(r.reason) + "\r\n";
        c.out += "content-type: " + std::string(r.content_type) + "\r\n";
        c.out += "content-length: " + std::to_string(r.body.size()) + "\r\ncache-control: no-store\r\n";
        if (r.allow)
            c.out += "allow: GET, HEAD\r\n";
        if (close)
            c.out += "connection: close\r\n";
        c.out += "\r\n";
        if (!head)
            c.out += r.body;
        c.close_after = c.close_after || close;
    }

    int fd_ = -1;
    std::uint16_t port_ = 0;
    std::string url_;
    std::vector<conn> conns_;
};

} // namespace cserve::detail

#endif
