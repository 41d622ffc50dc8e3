package cloudformation_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/mmdb"
	"github.com/originlens/originlens/internal/report"
)

const (
	maxMindSecret  = "arn:aws:secretsmanager:us-east-2:123456789012:secret:originlens/maxmind-AbCdEf"
	geoipUpdateRPM = "https://github.com/maxmind/geoipupdate/releases/download/v7.1.1/geoipupdate_7.1.1_linux_amd64.rpm"
)

// geoipDatabases writes GeoLite2-shaped City and ASN databases that place
// 127.0.0.0/8 (a record wins over the address class), so a connection over
// loopback shows whether the app read them.
func geoipDatabases(t *testing.T) (city, asn string) {
	t.Helper()
	dir := t.TempDir()
	city, asn = filepath.Join(dir, "GeoLite2-City.mmdb"), filepath.Join(dir, "GeoLite2-ASN.mmdb")
	built := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	lo := netip.MustParsePrefix("127.0.0.0/8")
	if err := mmdb.WriteCityFile(city, []mmdb.Entry{{Prefix: lo, CountryISO: "NZ", CountryName: "New Zealand",
		ContinentCode: "OC", City: "Wellington", Lat: -41.2865, Lon: 174.7762, TimeZone: "Pacific/Auckland"}}, built); err != nil {
		t.Fatal(err)
	}
	if err := mmdb.WriteASNFile(asn, []mmdb.ASNEntry{{Prefix: lo, Number: 64511, Org: "Example Loopback Ltd"}}, built); err != nil {
		t.Fatal(err)
	}
	return city, asn
}

// TestUserDataGeoIPUpdate runs the app's user data with MaxMindSecretArn
// set, in a temporary root with stand-ins for aws (the secret, the tarball,
// the brokers), dnf, systemctl and geoipupdate. It checks that the license
// reaches /etc/GeoIP.conf (mode 0600) from Secrets Manager, that the
// geoipupdate unit and timer are installed and the timer enabled, that the
// app's --geoip-db and --asn-db name the files geoipupdate wrote, and that
// the real app started from that configuration places a client with them.
// When geoipupdate fails the app starts without databases and the log says
// clients stay unplaced.
func TestUserDataGeoIPUpdate(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	for _, tool := range []string{"tar", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (the user data uses it on the instance)", tool)
		}
	}
	app := buildCmd(t, "app")
	city, asn := geoipDatabases(t)
	tarball := filepath.Join(t.TempDir(), "release.tar.gz")
	writeRelease(t, tarball, map[string]string{
		"bin/app":                                app,
		"systemd/originlens-app.service":         filepath.Join(repoRoot, "deploy/systemd/originlens-app.service"),
		"systemd/originlens-geoipupdate.service": filepath.Join(repoRoot, "deploy/systemd/originlens-geoipupdate.service"),
		"systemd/originlens-geoipupdate.timer":   filepath.Join(repoRoot, "deploy/systemd/originlens-geoipupdate.timer"),
	})

	for _, c := range []struct {
		name       string
		installed  bool // geoipupdate present before the user data runs
		updateFail bool // geoipupdate exits 1 (bad key, no egress)
	}{
		{name: "installed"},
		{name: "from-rpm"},
		{name: "update-fails", installed: true, updateFail: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newUserDataRoot(t, tarball, `"kafka get-bootstrap-brokers") echo b-1.originlens.example:9098 ;;
"secretsmanager get-secret-value")
	[[ " $* " == *" --secret-id `+maxMindSecret+` "* ]] || { echo "wrong secret: $*" >&2; exit 1; }
	echo '{"account_id": "123456", "license_key": "abc_DEF123"}' ;;`, "/etc/GeoIP.conf", "/var/lib/GeoIP")
			root, rewrite, fake, calls := r.dir, r.rewrite, r.fake, r.calls
			fail := ""
			if c.updateFail {
				fail = "echo 'geoipupdate: error retrieving updates: invalid license key' >&2; exit 1"
			}
			standIn := filepath.Join(root, "geoipupdate.standin")
			writeScript(t, standIn, `#!/bin/bash
# geoipupdate as MaxMind ships it: -f config, -d directory; writes each
# edition to a temporary file and renames it into place.
echo "geoipupdate $*" >>"`+calls+`"
conf= dir=
while [ $# -gt 0 ]; do case $1 in -f) conf=$2; shift ;; -d) dir=$2; shift ;; esac; shift; done
grep -qx 'AccountID 123456' "$conf" && grep -qx 'LicenseKey abc_DEF123' "$conf" \
	&& grep -qx 'EditionIDs GeoLite2-City GeoLite2-ASN' "$conf" || { echo "bad config $conf" >&2; cat "$conf" >&2; exit 1; }
`+fail+`
src="`+city+`"; [ -s "`+root+`/next-city" ] && src=$(cat "`+root+`/next-city")
cp "$src" "$dir/.GeoLite2-City.tmp" && mv "$dir/.GeoLite2-City.tmp" "$dir/GeoLite2-City.mmdb"
cp "`+asn+`" "$dir/.GeoLite2-ASN.tmp" && mv "$dir/.GeoLite2-ASN.tmp" "$dir/GeoLite2-ASN.mmdb"
`)
			if c.installed {
				if err := os.Symlink(standIn, filepath.Join(fake, "geoipupdate")); err != nil {
					t.Fatal(err)
				}
			}
			// Amazon Linux has no geoipupdate package; MaxMind's RPM installs it.
			writeScript(t, filepath.Join(fake, "dnf"), `#!/bin/bash
echo "dnf $*" >>"`+calls+`"
case "${@: -1}" in
geoipupdate) echo "No match for argument: geoipupdate" >&2; exit 1 ;;
`+geoipUpdateRPM+`) ln -s "`+standIn+`" "`+fake+`/geoipupdate" ;;
*) exit 1 ;;
esac
`)
			log := r.run(t, bash, renderUserData(t, load(t, "app.yaml"), "AppLaunchTemplate", map[string]string{"MaxMindSecretArn": maxMindSecret}))
			got, _ := os.ReadFile(calls)
			if c.installed == strings.Contains(string(got), "dnf") {
				t.Errorf("geoipupdate installed beforehand: %v, but dnf calls:\n%s", c.installed, got)
			}
			if !c.installed && !strings.Contains(string(got), "dnf -y -q install "+geoipUpdateRPM) {
				t.Errorf("no fallback to MaxMind's pinned RPM:\n%s", got)
			}
			wantTail := "systemctl daemon-reload\nsystemctl enable --now originlens-geoipupdate.timer\nsystemctl enable --now originlens-app.service\n"
			if !strings.HasSuffix(string(got), wantTail) {
				t.Errorf("calls:\n%s\nwant last:\n%s", got, wantTail)
			}
			conf := filepath.Join(root, "etc/GeoIP.conf")
			st, err := os.Stat(conf)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("/etc/GeoIP.conf mode %o, want 0600 (it holds the license key)", st.Mode().Perm())
			}
			for _, u := range []string{"originlens-geoipupdate.service", "originlens-geoipupdate.timer"} {
				if _, err := os.Stat(filepath.Join(root, "etc/systemd/system", u)); err != nil {
					t.Errorf("%s not installed: %v", u, err)
				}
			}
			u := parseUnit(t, filepath.Join(root, "etc/systemd/system/originlens-app.service"))
			data, err := os.ReadFile(rewrite.Replace(u.envFile))
			if err != nil {
				t.Fatal(err)
			}
			env := envFile(t, strings.Split(string(data), "\n"), nil)
			wantCity, wantASN := root+"/var/lib/GeoIP/GeoLite2-City.mmdb", root+"/var/lib/GeoIP/GeoLite2-ASN.mmdb"
			if c.updateFail {
				wantCity, wantASN = "", ""
				if !strings.Contains(string(log), "clients stay unplaced") {
					t.Errorf("bootstrap log does not say clients stay unplaced:\n%s", log)
				}
			}
			if env["APP_GEOIP_DB"] != wantCity || env["APP_ASN_DB"] != wantASN {
				t.Fatalf("APP_GEOIP_DB=%q APP_ASN_DB=%q, want %q and %q\nbootstrap log:\n%s", env["APP_GEOIP_DB"], env["APP_ASN_DB"], wantCity, wantASN, log)
			}
			env["APP_KAFKA_BROKERS"] = ""
			listen := freeAddr(t)
			env["APP_LISTEN"] = listen
			env["APP_ADMIN"] = freeAddr(t)
			env["APP_SPOOL_DIR"] = filepath.Join(root, "var/lib/originlens-app/spool")
			wantCountry := "NZ"
			if c.updateFail {
				wantCountry = ""
			}
			env["APP_GEOIP_RELOAD_INTERVAL"] = "100ms" // the unit's default is slower; the mechanism is the same
			runApp(t, rewrite.Replace(u.execStart[0]), u.execStart[1:], env, listen, env["APP_PROXY_PROTOCOL"], func(listen string) {
				if r := reportOf(t, listen); r[report.KeyCountry] != wantCountry {
					t.Errorf("report %v: country %q, want %q (from the database geoipupdate wrote)", r, r[report.KeyCountry], wantCountry)
				}
				if c.updateFail {
					return
				}
				// The timer's run: the installed unit's command line, with the
				// stand-in for /usr/bin/geoipupdate, renames a newer database
				// into place; the running app must take it up by itself.
				next := filepath.Join(t.TempDir(), "next.mmdb")
				if err := mmdb.WriteCityFile(next, []mmdb.Entry{{Prefix: netip.MustParsePrefix("127.0.0.0/8"), CountryISO: "AU",
					CountryName: "Australia", ContinentCode: "OC", City: "Sydney", Lat: -33.8688, Lon: 151.2093}}, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, "next-city"), []byte(next), 0o644); err != nil {
					t.Fatal(err)
				}
				gu := parseExec(t, filepath.Join(root, "etc/systemd/system/originlens-geoipupdate.service"))
				if out, err := exec.Command(standIn, strings.Fields(rewrite.Replace(strings.Join(gu[1:], " ")))...).CombinedOutput(); err != nil {
					t.Fatalf("the timer's geoipupdate %v: %v\n%s", gu, err, out)
				}
				deadline := time.Now().Add(30 * time.Second)
				for {
					r := reportOf(t, listen)
					if r[report.KeyCountry] == "AU" {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("30 s after geoipupdate renamed a new database into place the app still reports %v", r)
					}
					time.Sleep(100 * time.Millisecond)
				}
			})
		})
	}
}

// parseExec returns the ExecStart command line of a unit file.
func parseExec(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("%s: no ExecStart", path)
	}
	return strings.Fields(string(m[1]))
}

// reportOf sends one line to the app and parses its report line.
func reportOf(t *testing.T, addr string) map[string]string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, "geoip check\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	r, err := report.ParseLine(line)
	if err != nil {
		t.Fatalf("report line %q: %v", line, err)
	}
	return r
}

// TestGeoIPUpdateUnits checks the geoipupdate unit and timer with
// systemd-analyze, and that the unit updates the files the user data
// configures: the same config file and directory as the first run at boot.
func TestGeoIPUpdateUnits(t *testing.T) {
	service := filepath.Join(repoRoot, "deploy/systemd/originlens-geoipupdate.service")
	timer := filepath.Join(repoRoot, "deploy/systemd/originlens-geoipupdate.timer")
	data, err := os.ReadFile(service)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ExecStart=(\S+) (.*)$`).FindStringSubmatch(string(data))
	if m == nil || filepath.Base(m[1]) != "geoipupdate" {
		t.Fatalf("originlens-geoipupdate.service: ExecStart %q, want geoipupdate", m)
	}
	ud := renderUserData(t, load(t, "app.yaml"), "AppLaunchTemplate", map[string]string{"MaxMindSecretArn": maxMindSecret})
	if !strings.Contains(ud, "geoipupdate "+m[2]+")") {
		t.Errorf("the unit runs `geoipupdate %s`; the user data's first run differs:\n%s", m[2], ud)
	}
	if !strings.Contains(ud, "systemctl enable --now "+filepath.Base(timer)) {
		t.Errorf("the user data does not enable %s", filepath.Base(timer))
	}
	if def := renderUserData(t, load(t, "app.yaml"), "AppLaunchTemplate", nil); strings.Contains(def, "geoipupdate -") || strings.Contains(def, "secretsmanager") {
		t.Errorf("without MaxMindSecretArn the user data still runs geoipupdate or reads a secret:\n%s", def)
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed; units unchecked")
	}
	truth, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1) to stand in for geoipupdate")
	}
	dir := t.TempDir()
	s := strings.Replace(string(data), "ExecStart="+m[1], "ExecStart="+truth, 1)
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(service)), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	td, err := os.ReadFile(timer)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(timer)), td, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sa, "verify", filepath.Base(service), filepath.Base(timer))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, "originlens-geoipupdate") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
	if err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
