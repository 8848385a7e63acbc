/* SPDX-License-Identifier: MIT */
/*
 * The tool's proxy (tools/proxy.c), built on libktm's relay ("Relay" in
 * ktm.h).  Not part of libktm: the accept loop and the socket policy are
 * the application's.
 *
 * A proxy puts one authenticated TLS connection under migration code that
 * speaks plain stream sockets (QEMU's `migrate unix:PATH`).  It has two
 * ends, chosen by the configuration's endpoint:
 *
 *  - source (KTM_ENDPOINT_CLIENT): listens on the plain @local address; each
 *    connection accepted there gets its own session, ktm_session_connect()
 *    to @remote ("HOST:PORT"), the destination end;
 *  - destination (KTM_ENDPOINT_SERVER): listens for sessions on @remote
 *    ("[HOST:]PORT"; no host: every address) and for each one that passes
 *    the handshake connects to the plain @local address (QEMU's -incoming).
 *
 * @local is "unix:PATH" or "tcp:HOST:PORT" (a loopback address only:
 * plaintext guest memory must not cross a network).  A unix socket the
 * source end creates is removed by ktm_proxy_free(); a stale one (nobody
 * listening) is replaced.
 *
 * Every connection is handled in its own thread, so QEMU's multifd
 * channels become parallel TLS streams.  Sessions are set up one at a time
 * in accept order, which keeps the order in which the destination QEMU
 * sees its channels (QEMU 7.2 takes the first as the main channel).  The
 * report callback runs one at a time.
 */
#ifndef KTM_TOOL_PROXY_H
#define KTM_TOOL_PROXY_H

#include "ktm.h"

struct ktm_proxy;

/*
 * Create a proxy end and bind its listening socket (so clients can connect
 * as soon as this returns; ktm_proxy_address() says where).  @cfg is
 * borrowed and must outlive the proxy.  Returns NULL with *errp
 * (KTM_ERR_CONFIG for a bad address, KTM_ERR_IO when the bind fails).
 */
struct ktm_proxy *ktm_proxy_new(const struct ktm_config *cfg,
				const char *local, const char *remote,
				struct ktm_error **errp);
/* The listening address as bound, e.g. "127.0.0.1:40123" or
 * "unix:/run/mig.sock" (port 0 becomes the chosen port).  Owned by the
 * proxy. */
const char *ktm_proxy_address(const struct ktm_proxy *p);
/* Report finished connections to @fn (NULL: no reports).  Before run. */
/*
 * The source end's unix socket (created 0600, owned by this process):
 * give it to @owner / @group (-1: unchanged) and set @mode (0: keep 0600),
 * e.g. for a QEMU running as libvirt-qemu.  Every connection is then
 * checked with SO_PEERCRED: root, this process's user, @owner, or a
 * process whose primary group is @group may connect; anyone else is
 * refused before the destination is contacted, and the report says who
 * it was.  Before run; false with *errp (KTM_ERR_CONFIG).
 */
bool ktm_proxy_set_unix_access(struct ktm_proxy *p, long owner, long group,
			       unsigned int mode, struct ktm_error **errp);
/* How the TLS peer may end its connections (enum ktm_peer_end in ktm.h;
 * default KTM_PEER_END_CLOSE_NOTIFY).  Before run. */
void ktm_proxy_set_peer_end(struct ktm_proxy *p, enum ktm_peer_end end);
/* How long a TLS peer may leave our bytes unacknowledged (frozen,
 * partitioned) or, when idle, not answer keepalive, before its connection
 * fails (TCP_USER_TIMEOUT, keepalive); 0 (the default): the kernel's.
 * Before run. */
void ktm_proxy_set_io_timeout(struct ktm_proxy *p, unsigned int ms);
void ktm_proxy_set_report(struct ktm_proxy *p, ktm_proxy_report_fn fn,
			  void *opaque);
/*
 * Serve connections, blocking, until ktm_proxy_stop() or, with
 * @max_conns > 0, until that many connections were accepted and have
 * ended.  Returns the number of connections that failed (0 when all ended
 * cleanly), or -1 with *errp when the proxy itself could not go on (the
 * listening socket failed).  On stop, connections still open are cut and
 * count as failed; a destination's handshake in progress is cut, a
 * source's connect is let finish first (at most the configuration's
 * connect + handshake timeouts).  Handshakes run in the connections'
 * threads, at most 32 at once: a 33rd connection cuts the oldest one still
 * in its handshake, so connections that say nothing cannot hold the
 * listener.
 */
int ktm_proxy_run(struct ktm_proxy *p, unsigned int max_conns,
		  struct ktm_error **errp);
/* Make ktm_proxy_run() return.  Async-signal-safe; any thread. */
void ktm_proxy_stop(struct ktm_proxy *p);
/* Stop (if running elsewhere, the caller must have joined it), close the
 * listener, remove a unix socket it created.  Accepts NULL. */
void ktm_proxy_free(struct ktm_proxy *p);

#endif /* KTM_TOOL_PROXY_H */
