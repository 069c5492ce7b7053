// The cdktf side of `make bench`'s render figure, as `cdktf init --template typescript` sets a
// project up (cdktf.json: `npx ts-node main.ts`): the same droplets, firewalls, SSH key lookups and
// output that `infra-apply render` writes for the benchmark's 3 x 100 droplet tree, with the
// prebuilt DigitalOcean provider. It reads spec.json (written by bench/run.py from the same model)
// instead of parsing YAML, which only flatters cdktf. bench/run.py also times it compiled to
// JavaScript ahead of time (`tsc`, then `cdktf synth --app "node main.js"`).
import * as fs from "fs";
import * as path from "path";
import { App, TerraformStack, TerraformOutput, Fn, Token } from "cdktf";
import { DigitaloceanProvider } from "@cdktf/provider-digitalocean/lib/provider";
import { Droplet } from "@cdktf/provider-digitalocean/lib/droplet";
import { Firewall } from "@cdktf/provider-digitalocean/lib/firewall";
import { DataDigitaloceanSshKey } from "@cdktf/provider-digitalocean/lib/data-digitalocean-ssh-key";

const ANY = ["0.0.0.0/0", "::/0"];
const spec = JSON.parse(fs.readFileSync(path.join(__dirname, "spec.json"), "utf8"));
const app = new App({ outdir: "cdktf.out" });

for (const producer of spec.producers as any[]) {
  const stack = new TerraformStack(app, producer.name);
  new DigitaloceanProvider(stack, "digitalocean", {});
  const keys: Record<string, DataDigitaloceanSshKey> = {};
  for (const name of producer.ssh_keys) {
    keys[name] = new DataDigitaloceanSshKey(stack, `key_${name}`, { name });
  }
  const outputs: Record<string, unknown> = {};
  for (const d of producer.droplets as any[]) {
    const droplet = new Droplet(stack, d.address, {
      name: d.name,
      region: d.region,
      size: d.size,
      image: d.image,
      tags: d.tags,
      sshKeys: d.ssh_keys.map((k: string) => keys[k].id),
      monitoring: d.monitoring,
      userData: Fn.file(d.user_data),
      lifecycle: { ignoreChanges: ["name", "ssh_keys", "user_data", "monitoring"] },
    });
    new Firewall(stack, `fw_${d.address}`, {
      name: `fw-${d.address.replace(/_/g, "-")}`,
      dropletIds: [Token.asNumber(droplet.id)],
      inboundRule: d.inbound.map(([protocol, port]: string[]) => ({
        protocol,
        portRange: port,
        sourceAddresses: ANY,
      })),
      outboundRule: [
        { protocol: "tcp", portRange: "1-65535", destinationAddresses: ANY },
        { protocol: "udp", portRange: "1-65535", destinationAddresses: ANY },
        { protocol: "icmp", destinationAddresses: ANY },
      ],
    });
    outputs[d.name] = {
      id: droplet.id,
      ipv4_address: droplet.ipv4Address,
      ipv4_address_private: droplet.ipv4AddressPrivate,
      region: droplet.region,
      hosts: d.hosts,
      producer: producer.name,
      address: `digitalocean_droplet.${d.address}`,
    };
  }
  new TerraformOutput(stack, "droplets", { value: outputs });
}
app.synth();
