package opensearchtest

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/originlens/originlens/internal/event"
)

// SampleEvent returns a complete, valid connection event number i, ending
// at ts, with every optional group filled so that it exercises the whole
// index template. Addresses are from the documentation ranges.
func SampleEvent(i int, ts time.Time) event.Event {
	ev := event.New(ts.Add(-25 * time.Millisecond))
	ev.Event.ID = fmt.Sprintf("0190b1c2-0000-7000-8000-%012d", i)
	ev.Event.Action = event.ActionClosed
	ev.Event.Outcome = event.OutcomeSuccess
	ev.Event.Reason = "served"
	ev.Source.IP = netip.AddrFrom4([4]byte{203, 0, 113, byte(i % 250)})
	ev.Source.Port = uint16(40000 + i%20000)
	ev.Source.Bytes = 120
	countries := []struct {
		cc, name string
		lat, lon float64
		decision string
	}{{"DE", "Germany", 52.52, 13.40, "serve"}, {"FR", "France", 48.85, 2.35, "serve"}, {"US", "United States", 37.77, -122.42, "redirect"}, {"BR", "Brazil", -23.55, -46.63, "deny"}}
	c := countries[i%len(countries)]
	ev.Source.Geo = event.Geo{CountryISOCode: c.cc, CountryName: c.name, ContinentCode: "EU", RegionISOCode: "XX-1", RegionName: "Region", CityName: "Somewhere", Location: &event.Location{Lat: c.lat, Lon: c.lon}, Timezone: "Europe/Berlin", Class: "public"}
	ev.Source.AS.Number = 64496 + uint32(i%10)
	ev.Source.AS.Organization.Name = "Example Net"
	ev.Destination.IP = netip.MustParseAddr("198.51.100.10")
	ev.Destination.Port = 80
	ev.Destination.Bytes = 300
	ev.Network.Type = "ipv4"
	ev.Network.Protocol = event.ProtocolHTTP
	ev.ClientIP.Via = event.ViaProxyV2
	ev.ClientIP.Peer.IP = netip.MustParseAddr("192.0.2.7")
	ev.ClientIP.Peer.Port = 51000
	ev.ClientIP.VPCEID = "vpce-0123456789abcdef0"
	ev.ClientIP.LimitPrefix = netip.PrefixFrom(ev.Source.IP, 32)
	ev.Residency = event.Residency{Jurisdiction: "EU", Decision: c.decision, Region: "eu-central-1", Rule: "eu-only"}
	ev.App.Lang = "de"
	ev.Relay = event.Relay{Upstream: event.Peer{IP: netip.MustParseAddr("127.0.0.1"), Port: 8080}, Mode: "transparent", End: "client-closed"}
	ev.Finish(ts)
	return ev
}

// SampleUDPEvent returns SampleEvent(i, ts) as a UDP flow event: transport
// udp, datagram counts each way and the flow group filled.
func SampleUDPEvent(i int, ts time.Time) event.Event {
	ev := SampleEvent(i, ts)
	ev.Event.ID = fmt.Sprintf("0190b1c2-0000-7000-9000-%012d", i)
	ev.Network.Transport = event.TransportUDP
	ev.Network.Protocol = event.ProtocolLine
	ev.Source.Packets, ev.Destination.Packets = 3, 3
	ev.Flow = event.Flow{FirstSeen: ev.Event.Start, LastSeen: ev.Event.End, End: "idle-timeout", RateLimited: 1, Truncated: 1}
	return ev
}
