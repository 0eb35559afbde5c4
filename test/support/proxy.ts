/**
 * A TCP proxy in front of PostgreSQL that can stall a connection without closing it, the way a network cut
 * looks to both ends: no data, no FIN, no RST.
 */
import { createServer, type Socket } from "node:net"

export interface Proxy {
  readonly port: number
  /** Connection URL through the proxy, from a direct URL. */
  readonly url: (direct: string) => string
  /** Stops forwarding in both directions on every current connection; sockets stay open. */
  readonly freeze: () => void
  /** Closes every current connection on both sides. */
  readonly cut: () => void
  readonly close: () => Promise<void>
}

export const startProxy = (target: { host: string; port: number }): Promise<Proxy> =>
  new Promise((resolve, reject) => {
    const pairs = new Set<{ client: Socket; server: Socket; frozen: boolean }>()
    const proxy = createServer((client) => {
      const server = new (client.constructor as typeof Socket)()
      const pair = { client, server, frozen: false }
      pairs.add(pair)
      server.connect(target.port, target.host)
      const forward = (from: Socket, to: Socket) => {
        from.on("data", (chunk) => {
          if (!pair.frozen) to.write(chunk)
        })
        from.on("close", () => {
          if (!pair.frozen) to.destroy()
          pairs.delete(pair)
        })
        from.on("error", () => undefined)
      }
      forward(client, server)
      forward(server, client)
    })
    proxy.on("error", reject)
    proxy.listen(0, "127.0.0.1", () => {
      const address = proxy.address()
      if (address === null || typeof address === "string") return reject(new Error("no proxy port"))
      resolve({
        port: address.port,
        url: (direct) => {
          const parsed = new URL(direct)
          parsed.hostname = "127.0.0.1"
          parsed.port = String(address.port)
          return parsed.toString()
        },
        freeze: () => {
          for (const pair of pairs) pair.frozen = true
        },
        cut: () => {
          for (const pair of pairs) {
            pair.client.destroy()
            pair.server.destroy()
          }
          pairs.clear()
        },
        close: () =>
          new Promise((done) => {
            for (const pair of pairs) {
              pair.client.destroy()
              pair.server.destroy()
            }
            proxy.close(() => done())
          })
      })
    })
  })
