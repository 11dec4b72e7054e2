// `pgop image build`: the offline Debian cloud image the libvirt provider boots (src/image).

import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { EXIT, terminal } from '../../errors.js';
import { resolveBuildOptions, type ImageBuildFlags } from '../../image/recipe.js';

/** provider.baseImage of a libvirt spec, read without full validation (the image may not exist yet). */
export function specBaseImage(file: string): string {
  let doc: unknown;
  try {
    doc = parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw terminal(`cannot read ${file}: ${(e as Error).message}`);
  }
  const provider = (doc as { spec?: { provider?: { type?: unknown; baseImage?: unknown } } } | null)?.spec
    ?.provider;
  if (provider?.type !== 'libvirt')
    throw terminal(`cannot build image for ${file}: its provider is not libvirt`);
  if (typeof provider.baseImage !== 'string' || !provider.baseImage)
    throw terminal(`cannot build image for ${file}: spec.provider.baseImage is not set`);
  return provider.baseImage;
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;

export async function imageBuildCommand(flags: ImageBuildFlags & { file?: string }): Promise<number> {
  const opts = resolveBuildOptions(flags, flags.file ? specBaseImage(flags.file) : undefined);
  const { buildImage } = await import('../../image/build.js');
  const r = await buildImage(opts);
  if (r.status === 'up-to-date') {
    process.stdout.write(
      `image ${r.output} up to date ` +
        `(recipe ${r.recipeHash.slice(0, 12)}, ${mib(r.fileBytes)}); --force rebuilds it\n`,
    );
  } else {
    process.stdout.write(
      `image ${r.output} built in ${r.seconds.toFixed(1)} s ` +
        `(${mib(r.fileBytes)}, recipe ${r.recipeHash.slice(0, 12)})\n`,
    );
  }
  return EXIT.ok;
}
