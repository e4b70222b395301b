// Benchmark: a WebSocket load client (wrk speaks only HTTP)
//
//   ws_load --host 127.0.0.1 --port P --path /ws --connections N --size S
//           --duration SECONDS [--warmup SECONDS] [--binary|--text]
//
// Opens N connections (no permessage-deflate) one after the other; then each sends one
// message of S bytes, waits for its echo, and repeats. Round trips that complete during the
// warm-up are not counted. After the measured time every connection finishes its round
// trip and closes with 1000. Prints one JSON line:
//
//   {"connections":N,"size":S,"seconds":..,"messages":..,"rate":..,"p50_us":..,"p99_us":..,"errors":..}
//
// errors counts echoes that differ from what was sent (size, content or text/binary) and
// connections lost before the end. Exit status: 0 after a run with at least one message,
// 1 when a connection could not be opened (nothing is printed on stdout then) or nothing
// was echoed, 2 for bad arguments. Single-threaded, like the servers it measures.
//
// The client has to stay cheaper than the servers it loads, or the measurement shows the
// client's limit: a server waiting for its client reads before the next message is there
// and pays for the failed reads. So, after a handshake through Beast's HTTP parser, frames
// are written and read by hand on an edge-triggered epoll loop of its own, as wrk does: the
// masked frame is built once and written with one send() a message, the echo is read with
// one recv() (a short read leaves nothing behind) and checked where it was read (RFC 6455
// §5: a client masks, a server does not). Pings from the server are answered; fragmented
// echoes are put together.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using clock_type = std::chrono::steady_clock;

struct options {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;
    std::string path = "/ws";
    std::size_t connections = 1;
    std::size_t size = 64;
    double duration = 10;
    double warmup = 0;
    bool binary = true;
};

// Everything the connections share; one thread, so no locking.
struct run_state {
    clock_type::time_point measure_from;
    clock_type::time_point measure_until;
    bool stopping = false;
    std::size_t active = 0;
    std::uint64_t messages = 0;
    std::uint64_t errors = 0;
    std::vector<std::uint64_t> latencies_ns; // measured round trips only
};

constexpr std::array<unsigned char, 4> mask_key{0x37, 0xfa, 0x21, 0x3d};

// One masked client frame (FIN set) with the given opcode and payload.
std::string
client_frame(unsigned opcode, std::string_view payload)
{
    std::string f;
    f.push_back(static_cast<char>(0x80 | opcode));
    auto const n = payload.size();
    if (n < 126) {
        f.push_back(static_cast<char>(0x80 | n));
    } else if (n <= 0xffff) {
        f.push_back(static_cast<char>(0x80 | 126));
        f.push_back(static_cast<char>(n >> 8));
        f.push_back(static_cast<char>(n & 0xff));
    } else {
        f.push_back(static_cast<char>(0x80 | 127));
        for (int shift = 56; shift >= 0; shift -= 8)
            f.push_back(static_cast<char>((static_cast<std::uint64_t>(n) >> shift) & 0xff));
    }
    f.append(reinterpret_cast<char const*>(mask_key.data()), mask_key.size());
    for (std::size_t i = 0; i < n; ++i)
        f.push_back(static_cast<char>(static_cast<unsigned char>(payload[i]) ^ mask_key[i % 4]));
    return f;
}

// The opening handshake, synchronously: connections are opened one after the other before
// anything is measured. What the server sent behind its 101 stays in `rest`.
tcp::socket
open_connection(net::io_context& ioc, options const& opt, std::string& rest)
{
    tcp::socket sock(ioc);
    sock.connect(tcp::endpoint(net::ip::make_address(opt.host), opt.port));
    sock.set_option(tcp::no_delay(true));

    // The key of RFC 6455 §1.3's example, and the answer it must get.
    http::request<http::empty_body> req(http::verb::get, opt.path, 11);
    req.set(http::field::host, opt.host + ":" + std::to_string(opt.port));
    req.set(http::field::upgrade, "websocket");
    req.set(http::field::connection, "Upgrade");
    req.set(http::field::sec_websocket_key, "dGhlIHNhbXBsZSBub25jZQ==");
    req.set(http::field::sec_websocket_version, "13");
    http::write(sock, req);

    beast::flat_buffer buffer;
    http::response_parser<http::empty_body> parser;
    parser.skip(true); // a 101 has no body
    http::read(sock, buffer, parser);
    auto const& res = parser.get();
    if (res.result() != http::status::switching_protocols)
        throw std::runtime_error("handshake answered " + std::to_string(res.result_int()));
    if (res[http::field::sec_websocket_accept] != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        throw std::runtime_error("handshake: wrong Sec-WebSocket-Accept");
    if (res.count(http::field::sec_websocket_extensions))
        throw std::runtime_error("handshake: the server chose an extension nobody asked for");
    rest.assign(static_cast<char const*>(buffer.data().data()), buffer.size());
    sock.non_blocking(true);
    return sock;
}

class connection {
public:
    connection(int fd, int epoll_fd, std::string const& rest, std::string const& frame, std::string const& payload,
               bool binary, run_state& s)
        : fd_(fd), epoll_fd_(epoll_fd), frame_(frame), payload_(payload), binary_(binary), s_(s)
    {
        in_.resize(std::max<std::size_t>(16 * 1024, 2 * (payload.size() + 14) + rest.size()));
        std::memcpy(in_.data(), rest.data(), rest.size());
        have_ = rest.size();
    }

    connection(connection const&) = delete;
    connection& operator=(connection const&) = delete;
    ~connection() { stop(); }

    void start() { send_message(); }

    int fd() const noexcept { return fd_; }

    // Closes the socket: when done, or cut off at the end of the grace time.
    void stop() noexcept
    {
        if (fd_ >= 0)
            ::close(fd_);
        fd_ = -1;
    }

    void on_event(std::uint32_t events)
    {
        if (finished_)
            return;
        if ((events & EPOLLOUT) != 0 && !out_.empty())
            write_pending();
        if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0 && !finished_)
            read();
    }

private:
    // Sends what the socket takes now; the rest waits for EPOLLOUT (rarely: the server
    // reads what a connection sends before it answers).
    void write(std::string_view bytes)
    {
        if (!out_.empty()) {
            out_.append(bytes); // a pong behind the rest of a message
            return;
        }
        auto const n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return lose();
        auto const sent = n < 0 ? std::size_t{0} : static_cast<std::size_t>(n);
        if (sent == bytes.size())
            return;
        out_.assign(bytes.substr(sent));
        watch(EPOLLIN | EPOLLOUT | EPOLLET);
    }

    void write_pending()
    {
        auto const n = ::send(fd_, out_.data(), out_.size(), MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return lose();
        if (n > 0)
            out_.erase(0, static_cast<std::size_t>(n));
        if (out_.empty())
            watch(EPOLLIN | EPOLLET);
    }

    void watch(std::uint32_t events)
    {
        epoll_event ev{};
        ev.events = events;
        ev.data.ptr = this;
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd_, &ev);
    }

    void send_message()
    {
        start_ = clock_type::now();
        write(frame_);
    }

    // Reads what arrived, and acts on the first whole echo in it.
    void read()
    {
        bool drained = false; // a short read emptied the socket: the next edge brings more
        for (;;) {
            switch (parse()) {
            case next::more:
                break;
            case next::send:
                return send_message();
            case next::close:
                // Close with 1000 and read until the server's close frame (or its end of
                // stream).
                closing_ = true;
                return write(close_frame_);
            case next::gone:
                return;
            }
            if (drained)
                return;
            if (have_ == in_.size())
                in_.resize(in_.size() * 2);
            auto const room = in_.size() - have_;
            auto const n = ::recv(fd_, in_.data() + have_, room, 0);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            if (n <= 0)
                return closing_ ? done() : lose();
            have_ += static_cast<std::size_t>(n);
            drained = static_cast<std::size_t>(n) < room;
        }
    }

    enum class next { more, send, close, gone };

    // Takes the complete frames off the input, up to and including the first whole echo.
    next parse()
    {
        std::size_t pos = 0;
        auto result = next::more;
        while (result == next::more) {
            auto const* b = in_.data() + pos;
            auto const avail = have_ - pos;
            if (avail < 2)
                break;
            bool const fin = (b[0] & 0x80) != 0;
            unsigned const opcode = b[0] & 0x0f;
            if ((b[1] & 0x80) != 0 || (b[0] & 0x70) != 0)
                return fail(); // a masked server frame, or RSV bits nobody negotiated
            std::uint64_t len = b[1] & 0x7f;
            std::size_t head = 2;
            if (len == 126) {
                if (avail < 4)
                    break;
                len = (std::uint64_t{b[2]} << 8) | b[3];
                head = 4;
            } else if (len == 127) {
                if (avail < 10)
                    break;
                len = 0;
                for (int i = 2; i < 10; ++i)
                    len = (len << 8) | b[i];
                head = 10;
            }
            if (avail - head < len) {
                if (head + len > in_.size())
                    in_.resize(head + len);
                break;
            }
            std::string_view body(reinterpret_cast<char const*>(b + head), len);
            pos += head + len;
            switch (opcode) {
            case 0x9: { // ping: answered with the same payload, at once
                write(client_frame(0xa, body));
                if (finished_)
                    return next::gone;
                break;
            }
            case 0xa:
                break;
            case 0x8:
                if (!closing_)
                    ++s_.errors; // the server closed in the middle of the run
                done();
                return next::gone;
            case 0x1:
            case 0x2:
                if (in_message_)
                    return fail(); // a new message inside a fragmented one
                message_binary_ = opcode == 0x2;
                if (fin) {
                    result = on_message(body);
                    break;
                }
                message_.assign(body);
                in_message_ = true;
                break;
            case 0x0:
                if (!in_message_)
                    return fail(); // a continuation of nothing
                message_.append(body);
                if (fin) {
                    in_message_ = false;
                    result = on_message(message_);
                }
                break;
            default:
                return fail();
            }
        }
        if (pos > 0 && pos < have_)
            std::memmove(in_.data(), in_.data() + pos, have_ - pos);
        have_ -= pos;
        return result;
    }

    // A whole echo arrived: counted, then the next message or the close.
    next on_message(std::string_view echo)
    {
        auto const end = clock_type::now();
        bool const same = echo == payload_ && message_binary_ == binary_;
        if (!same) {
            ++s_.errors;
        } else if (end >= s_.measure_from && end <= s_.measure_until) {
            ++s_.messages;
            s_.latencies_ns.push_back(
                static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start_).count()));
        }
        return s_.stopping ? next::close : next::send;
    }

    next fail()
    {
        ++s_.errors; // once, even after the end of the measured time
        done();
        return next::gone;
    }

    void lose()
    {
        // A connection cut off by the grace time was not lost: it was closed on purpose.
        if (!s_.stopping)
            ++s_.errors;
        done();
    }

    void done()
    {
        if (finished_)
            return;
        finished_ = true;
        stop();
        --s_.active;
    }

    int fd_;
    int const epoll_fd_;
    std::string const& frame_;
    std::string const& payload_;
    bool const binary_;
    run_state& s_;

    std::vector<unsigned char> in_;
    std::size_t have_ = 0;
    std::string out_;     // what the socket did not take yet
    std::string message_; // a fragmented echo being put together
    bool in_message_ = false;
    bool message_binary_ = false;
    bool closing_ = false;
    bool finished_ = false;
    clock_type::time_point start_;
    std::string const close_frame_ = client_frame(0x8, std::string_view("\x03\xe8", 2));
};

template <class T>
bool
parse_number(std::string_view text, T& out)
{
    auto r = std::from_chars(text.data(), text.data() + text.size(), out);
    return !text.empty() && r.ec == std::errc() && r.ptr == text.data() + text.size();
}

bool
parse_seconds(std::string_view text, double& out)
{
    std::string s(text);
    char* end = nullptr;
    out = std::strtod(s.c_str(), &end);
    return !s.empty() && end == s.c_str() + s.size() && std::isfinite(out) && out >= 0;
}

int
usage(char const* program)
{
    std::fprintf(stderr,
                 "usage: %s --host 127.0.0.1 --port P --path /ws --connections N --size S\n"
                 "       --duration SECONDS [--warmup SECONDS] [--binary|--text]\n",
                 program);
    return 2;
}

double
percentile_us(std::vector<std::uint64_t>& v, double p)
{
    if (v.empty())
        return 0;
    auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return static_cast<double>(v[k]) / 1000.0;
}

} // namespace

int
main(int argc, char** argv)
{
    options opt;
    bool have_port = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--binary" || arg == "--text") {
            opt.binary = arg == "--binary";
            continue;
        }
        if (i + 1 >= argc)
            return usage(argv[0]);
        std::string_view value = argv[++i];
        bool ok = true;
        if (arg == "--host")
            opt.host = value;
        else if (arg == "--port")
            ok = have_port = parse_number(value, opt.port);
        else if (arg == "--path")
            opt.path = value;
        else if (arg == "--connections")
            ok = parse_number(value, opt.connections) && opt.connections > 0;
        else if (arg == "--size")
            ok = parse_number(value, opt.size);
        else if (arg == "--duration")
            ok = parse_seconds(value, opt.duration) && opt.duration > 0;
        else if (arg == "--warmup")
            ok = parse_seconds(value, opt.warmup);
        else
            ok = false;
        if (!ok)
            return usage(argv[0]);
    }
    if (!have_port)
        return usage(argv[0]);

    std::string payload(opt.size, '\0');
    for (std::size_t i = 0; i < payload.size(); ++i)
        payload[i] = static_cast<char>('a' + i % 26);
    std::string const frame = client_frame(opt.binary ? 0x2 : 0x1, payload);

    net::io_context ioc(1); // for the handshakes only
    run_state s;
    int const epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0) {
        std::perror("ws_load: epoll_create1");
        return 1;
    }
    std::vector<std::unique_ptr<connection>> conns;
    conns.reserve(opt.connections);
    for (std::size_t i = 0; i < opt.connections; ++i) {
        try {
            std::string rest;
            auto sock = open_connection(ioc, opt, rest);
            conns.push_back(std::make_unique<connection>(sock.release(), epoll_fd, rest, frame, payload, opt.binary, s));
            epoll_event ev{};
            ev.events = EPOLLIN | EPOLLET;
            ev.data.ptr = conns.back().get();
            if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, conns.back()->fd(), &ev) != 0)
                throw std::system_error(errno, std::generic_category(), "epoll_ctl");
        } catch (std::exception const& e) {
            std::fprintf(stderr, "ws_load: cannot connect to ws://%s:%u%s (connection %zu of %zu): %s\n",
                         opt.host.c_str(), static_cast<unsigned>(opt.port), opt.path.c_str(), i + 1,
                         opt.connections, e.what());
            return 1;
        }
    }

    auto const to_duration = [](double seconds) {
        return std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds));
    };
    s.latencies_ns.reserve(1 << 20);
    s.measure_from = clock_type::now() + to_duration(opt.warmup);
    s.measure_until = s.measure_from + to_duration(opt.duration);
    s.active = conns.size();
    for (auto& c : conns)
        c->start();

    // After the measured time every connection finishes its round trip and closes; those
    // that take more than the grace time are cut off.
    auto const grace = std::chrono::seconds(2);
    std::array<epoll_event, 256> events;
    while (s.active > 0) {
        auto const now = clock_type::now();
        if (!s.stopping && now >= s.measure_until)
            s.stopping = true;
        if (s.stopping && now >= s.measure_until + grace)
            break;
        auto const until = s.stopping ? s.measure_until + grace : s.measure_until;
        auto const wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count() + 1;
        int const n = ::epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()),
                                   static_cast<int>(std::min<long long>(wait_ms, 100)));
        if (n < 0 && errno != EINTR) {
            std::perror("ws_load: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; ++i)
            static_cast<connection*>(events[static_cast<std::size_t>(i)].data.ptr)->on_event(events[static_cast<std::size_t>(i)].events);
    }
    conns.clear(); // closes what is still open
    ::close(epoll_fd);

    double const rate = static_cast<double>(s.messages) / opt.duration;
    double const p50 = percentile_us(s.latencies_ns, 0.50);
    double const p99 = percentile_us(s.latencies_ns, 0.99);
    std::printf("{\"connections\":%zu,\"size\":%zu,\"seconds\":%.3f,\"messages\":%llu,\"rate\":%.1f,"
                "\"p50_us\":%.1f,\"p99_us\":%.1f,\"errors\":%llu}\n",
                opt.connections, opt.size, opt.duration, static_cast<unsigned long long>(s.messages), rate, p50, p99,
                static_cast<unsigned long long>(s.errors));
    std::fflush(stdout);
    if (s.messages == 0) {
        std::fprintf(stderr, "ws_load: no message was echoed\n");
        return 1;
    }
    return 0;
}
