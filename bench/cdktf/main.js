// main.ts as plain JavaScript: the stricter cdktf baseline of `make bench`'s render figure (no
// TypeScript to compile; run as `cdktf synth --app "node main.js"`). Keep the two in step.
"use strict";
const fs = require("fs");
const path = require("path");
const { App, TerraformStack, TerraformOutput, Fn, Token } = require("cdktf");
const { DigitaloceanProvider } = require("@cdktf/provider-digitalocean/lib/provider");
const { Droplet } = require("@cdktf/provider-digitalocean/lib/droplet");
const { Firewall } = require("@cdktf/provider-digitalocean/lib/firewall");
const { DataDigitaloceanSshKey } = require("@cdktf/provider-digitalocean/lib/data-digitalocean-ssh-key");

const ANY = ["0.0.0.0/0", "::/0"];
const spec = JSON.parse(fs.readFileSync(path.join(__dirname, "spec.json"), "utf8"));
const app = new App({ outdir: "cdktf.out" });

for (const producer of spec.producers) {
  const stack = new TerraformStack(app, producer.name);
  new DigitaloceanProvider(stack, "digitalocean", {});
  const keys = {};
  for (const name of producer.ssh_keys) {
    keys[name] = new DataDigitaloceanSshKey(stack, `key_${name}`, { name });
  }
  const outputs = {};
  for (const d of producer.droplets) {
    const droplet = new Droplet(stack, d.address, {
      name: d.name,
      region: d.region,
      size: d.size,
      image: d.image,
      tags: d.tags,
      sshKeys: d.ssh_keys.map((k) => keys[k].id),
      monitoring: d.monitoring,
      userData: Fn.file(d.user_data),
      lifecycle: { ignoreChanges: ["name", "ssh_keys", "user_data", "monitoring"] },
    });
    new Firewall(stack, `fw_${d.address}`, {
      name: `fw-${d.address.replace(/_/g, "-")}`,
      dropletIds: [Token.asNumber(droplet.id)],
      inboundRule: d.inbound.map(([protocol, port]) => ({
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
